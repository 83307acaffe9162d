//! The `faultline` binary. See the `cli` library of this package.

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
