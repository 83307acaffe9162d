//! The `faultline` binary. See the `cli` library of this package.

/// mimalloc instead of glibc's malloc: every 1 MiB fetch allocates a read buffer and a response
/// frame, and glibc returned them to the kernel after each fetch (its heap trim), so the next
/// one faulted fresh zeroed pages in again: a quarter of the broker's CPU in page faults while
/// consuming (perf, `faultline bench consume`). mimalloc keeps them for reuse.
#[cfg(not(madsim))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() {
    use clap::Parser;
    let cli = cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(cli::main(cli));
    drop(runtime);
    std::process::exit(code);
}

#[cfg(madsim)]
fn main() {
    eprintln!("this is a simulation build; build faultline normally to run it");
    std::process::exit(2);
}
