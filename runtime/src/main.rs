//! The `sluice` binary: parse the command line and hand over to the library.

/// jemalloc instead of the C library's allocator: events, batches and read buffers are made
/// and freed on different threads at millions per second, where glibc's malloc spent a third
/// of the file source's time and kept returning pages to the kernel only to fault them back
/// (BENCHMARKS.md: tail → null 2.4 → 4.3 M events/s on one core). Its unprefixed `malloc`
/// serves librdkafka, RocksDB and zstd too (Kafka → Kafka channel → S3: 11 % less CPU). The
/// slim build (`--no-default-features`) keeps the system allocator, having no C dependency.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
