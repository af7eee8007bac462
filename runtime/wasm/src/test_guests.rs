//! Hand-written WAT guests for tests (unit tests here and black-box tests in `tests/`):
//! hostile ones that each do one bad thing, and a minimal well-behaved marker.
//! They need no toolchain, only the `wat` crate to assemble them.

/// A packed interceptor whose `intercept-packed` body is `body` (WAT instructions that must
/// leave the address of a return area on the stack). `init` succeeds.
pub fn packed_guest(body: &str) -> String {
    format!(
        r#"(component
  (core module $m
    (memory (export "memory") 64)
    (global $bump (mut i32) (i32.const 4096))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func $recurse (param i32) (result i32)
      (call $recurse (i32.add (local.get 0) (i32.const 1))))
    (data (i32.const 16) "\00\00\00\00")
    (data (i32.const 32) "wat")
    (data (i32.const 128) "\01\01\00\00\07\00\00\00version\01\00\00\00?\00")
    (func (export "init") (param i32 i32) (result i32)
      (i32.store8 (i32.const 64) (i32.const 0))
      (i32.store (i32.const 68) (i32.const 32))
      (i32.store (i32.const 72) (i32.const 3))
      (i32.store (i32.const 76) (i32.const 32))
      (i32.store (i32.const 80) (i32.const 3))
      (i32.const 64))
    (func (export "intercept-packed") (param i32 i32) (result i32)
      {body})
  )
  (core instance $i (instantiate $m))
  (type $info (record (field "name" string) (field "version" string)))
  (export $info2 "plugin-info" (type $info))
  (func (export "init") (param "config" string) (result (result $info2 (error string)))
    (canon lift (core func $i "init") (memory $i "memory") (realloc (func $i "cabi_realloc"))))
  (func (export "intercept-packed") (param "batch" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $i "intercept-packed") (memory $i "memory") (realloc (func $i "cabi_realloc"))))
)"#
    )
}

/// Returns the 4-byte answer at address 16 (`count = 0`): a wrong verdict count.
pub const WRONG_COUNT: &str = "(i32.store8 (i32.const 96) (i32.const 0))
      (i32.store (i32.const 100) (i32.const 16))
      (i32.store (i32.const 104) (i32.const 4))
      (i32.const 96)";
pub const INFINITE_LOOP: &str = "(loop $l (br $l)) (i32.const 0)";
pub const MEMORY_BOMB: &str =
    "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 256)) (i32.const -1)))) (i32.const 0)";
pub const DEEP_RECURSION: &str = "(call $recurse (i32.const 0))";
pub const PANIC: &str = "unreachable";
/// Answers with a list whose pointer lies outside memory: wasmtime refuses the answer with an
/// error that mentions memory, though no memory limit is involved.
pub const BAD_POINTER: &str = "(i32.store8 (i32.const 96) (i32.const 0))
      (i32.store (i32.const 100) (i32.const -65536))
      (i32.store (i32.const 104) (i32.const 16))
      (i32.const 96)";

/// Marks every event with header `version: <value>` (one byte), via a patch verdict; frees
/// its scratch memory after each call, so it can run for millions of events.
pub fn marker_guest(value: char) -> String {
    packed_guest(&format!(
        r#"(local $n i32) (local $out i32) (local $i i32) (local $at i32)
      (i32.store8 (i32.const 147) (i32.const {v}))
      (local.set $n (i32.load (local.get 0)))
      (local.set $out (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (i32.store (local.get $out) (local.get $n))
      (local.set $at (i32.add (local.get $out) (i32.const 4)))
      (block $done (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (memory.copy (local.get $at) (i32.const 128) (i32.const 21))
        (local.set $at (i32.add (local.get $at) (i32.const 21)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
      (i32.store8 (i32.const 96) (i32.const 0))
      (i32.store (i32.const 100) (local.get $out))
      (i32.store (i32.const 104) (i32.sub (local.get $at) (local.get $out)))
      (global.set $bump (i32.const 4096))
      (i32.const 96)"#,
        v = value as u32
    ))
}
