//! Where a plugin call runs: on the async worker that makes it, or stepped off it.
//!
//! wasmtime-wasi's synchronous bindings drive a few WASI functions (a stream's blocking write,
//! which is every `println!`, a poll, which is every sleep) with `block_on`, which panics on a
//! thread that is running async tasks. Stepping the worker off for every call
//! (`block_in_place`) is safe but costs two thread switches per call: a profile of the Rust
//! template filter found them at 5 % of the agent's time. So the linker's `wasi:io` functions
//! that block step off the worker themselves ([`add_to_linker`]), and a call runs on the
//! worker when the instance's last one was short ([`runs_inline`]); a slow plugin's calls
//! still step off, so they do not hold up the worker's other tasks.
//!
//! Only `wasi:io` needs this: the other WASI interfaces that block in wasmtime-wasi
//! (filesystem descriptors, sockets) are unreachable, as a plugin gets no preopened
//! directory and may not import `wasi:sockets` (see `sandbox::ALLOWED_IMPORTS`).

use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{
    DynPollable, StreamError, StreamResult,
    bindings::sync::io::{
        poll,
        streams::{self, InputStream, OutputStream},
    },
};

use super::sandbox::StoreState;

/// A call runs on the worker when the instance's previous call took less than this: the
/// worker's other tasks wait no longer than a built-in interceptor would make them, and longer
/// calls make the hand-off's cost small beside their own.
pub const INLINE_CALL_LIMIT: Duration = Duration::from_millis(1);

/// Whether the next call of an instance whose last call took `last` (None: it has made none)
/// runs on the worker.
pub fn runs_inline(last: Option<Duration>) -> bool {
    last.is_some_and(|t| t < INLINE_CALL_LIMIT)
}

/// Runs `f` where WASI may block: on a multi-threaded runtime the worker steps out with
/// `block_in_place`; on a current-thread runtime `f` runs on a scoped thread; outside a
/// runtime, here.
pub fn outside_async<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
        Err(_) => f(),
    }
}

/// Replaces wasmtime-wasi's `wasi:io/poll` and `wasi:io/streams` in `linker` with the same
/// functions, the blocking ones run through [`outside_async`].
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<StoreState, OffloadIo>(linker, |s| Offload(s.table()))?;
    streams::add_to_linker::<StoreState, OffloadIo>(linker, |s| Offload(s.table()))?;
    linker.allow_shadowing(false);
    Ok(())
}

struct OffloadIo;

impl HasData for OffloadIo {
    type Data<'a> = Offload<'a>;
}

/// The resource table, whose `wasi:io` functions are wasmtime-wasi's own; those that may
/// block are called off the worker.
struct Offload<'a>(&'a mut ResourceTable);

impl Offload<'_> {
    fn blocking<R: Send>(&mut self, f: impl FnOnce(&mut ResourceTable) -> R + Send) -> R {
        let table = &mut *self.0;
        outside_async(move || f(table))
    }
}

impl poll::Host for Offload<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        self.blocking(|t| poll::Host::poll(t, pollables))
    }
}

impl poll::HostPollable for Offload<'_> {
    fn ready(&mut self, p: Resource<DynPollable>) -> wasmtime::Result<bool> {
        self.blocking(|t| poll::HostPollable::ready(t, p))
    }
    fn block(&mut self, p: Resource<DynPollable>) -> wasmtime::Result<()> {
        self.blocking(|t| poll::HostPollable::block(t, p))
    }
    fn drop(&mut self, p: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(self.0, p)
    }
}

impl streams::Host for Offload<'_> {
    fn convert_stream_error(&mut self, e: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.0, e)
    }
}

impl streams::HostOutputStream for Offload<'_> {
    fn drop(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<()> {
        self.blocking(|t| streams::HostOutputStream::drop(t, s))
    }
    fn check_write(&mut self, s: Resource<OutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.0, s)
    }
    fn write(&mut self, s: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(self.0, s, bytes)
    }
    fn blocking_write_and_flush(
        &mut self,
        s: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        self.blocking(|t| streams::HostOutputStream::blocking_write_and_flush(t, s, bytes))
    }
    fn blocking_write_zeroes_and_flush(
        &mut self,
        s: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        self.blocking(|t| streams::HostOutputStream::blocking_write_zeroes_and_flush(t, s, len))
    }
    fn subscribe(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(self.0, s)
    }
    fn write_zeroes(&mut self, s: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.0, s, len)
    }
    fn flush(&mut self, s: Resource<OutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.0, s)
    }
    fn blocking_flush(&mut self, s: Resource<OutputStream>) -> StreamResult<()> {
        self.blocking(|t| streams::HostOutputStream::blocking_flush(t, s))
    }
    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.0, dst, src, len)
    }
    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        self.blocking(|t| streams::HostOutputStream::blocking_splice(t, dst, src, len))
    }
}

impl streams::HostInputStream for Offload<'_> {
    fn drop(&mut self, s: Resource<InputStream>) -> wasmtime::Result<()> {
        self.blocking(|t| streams::HostInputStream::drop(t, s))
    }
    fn read(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.0, s, len)
    }
    fn blocking_read(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        self.blocking(|t| streams::HostInputStream::blocking_read(t, s, len))
    }
    fn skip(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.0, s, len)
    }
    fn blocking_skip(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        self.blocking(|t| streams::HostInputStream::blocking_skip(t, s, len))
    }
    fn subscribe(&mut self, s: Resource<InputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(self.0, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_instance_whose_last_call_was_short_runs_on_the_worker() {
        assert!(
            !runs_inline(None),
            "a first call steps off: its length is unknown"
        );
        assert!(runs_inline(Some(Duration::from_micros(300))));
        assert!(!runs_inline(Some(INLINE_CALL_LIMIT)));
        assert!(!runs_inline(Some(Duration::from_millis(20))));
    }
}
