//! Byte buffers handed back to a small free list when dropped, instead of to the allocator.
//!
//! Every changed event needs a buffer for its header changes. Profiling `enrich.wasm` showed
//! the guest allocator (dlmalloc) taking about two thirds of the guest's time per event: one
//! allocation and one free per event cost more than decoding, calling the plugin and encoding
//! its verdict together. A buffer dropped after its verdict is encoded serves the next event.

use std::cell::RefCell;

/// At most this many spare buffers are kept, each of at most `MAX_KEPT_CAPACITY` bytes, so an
/// unusual batch (a huge one, or one with huge changes) does not pin its memory for good.
const MAX_SPARE: usize = 4096;
const MAX_KEPT_CAPACITY: usize = 4096;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A `Vec<u8>` that returns to the free list when dropped. Empty ones hold no memory.
#[derive(Default)]
pub(crate) struct RecycledBuf(Vec<u8>);

impl RecycledBuf {
    /// The buffer to append to, taken from the free list on first use.
    #[inline]
    pub(crate) fn get_mut(&mut self) -> &mut Vec<u8> {
        if self.0.capacity() == 0 {
            self.0 = SPARE
                .try_with(|s| s.borrow_mut().pop())
                .ok()
                .flatten()
                .unwrap_or_default();
        }
        &mut self.0
    }
}

impl std::ops::Deref for RecycledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Clone for RecycledBuf {
    fn clone(&self) -> Self {
        RecycledBuf(self.0.clone())
    }
}

impl Drop for RecycledBuf {
    #[inline]
    fn drop(&mut self) {
        let cap = self.0.capacity();
        if cap == 0 || cap > MAX_KEPT_CAPACITY {
            return;
        }
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        // During thread teardown (no free list any more) the buffer is simply freed.
        let _ = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < MAX_SPARE {
                s.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_empty_and_a_huge_one_is_not_kept() {
        let mut a = RecycledBuf::default();
        a.get_mut().extend_from_slice(b"abc");
        let ptr = a.0.as_ptr();
        drop(a);
        let mut b = RecycledBuf::default();
        assert!(b.is_empty(), "a new buffer reads empty before use");
        let buf = b.get_mut();
        assert!(buf.is_empty(), "a reused buffer comes back cleared");
        assert_eq!(buf.as_ptr(), ptr, "the dropped buffer's memory is reused");

        let mut huge = RecycledBuf::default();
        huge.get_mut().reserve(MAX_KEPT_CAPACITY * 2);
        let huge_ptr = huge.0.as_ptr();
        drop(huge);
        let mut c = RecycledBuf::default();
        assert_ne!(
            c.get_mut().as_ptr(),
            huge_ptr,
            "a huge buffer goes back to the allocator"
        );
    }
}
