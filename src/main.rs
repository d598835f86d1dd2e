use clap::Parser;

fn main() {
    let cli = anycloud::cli::Cli::parse_from(anycloud::cli::normalise_args(std::env::args_os()));
    let shell = anycloud::shell::Shell::new(cli.no_color, cli.quiet, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(anycloud::cli::run(&cli, shell.clone())) {
        Ok(code) => code,
        Err(e) => {
            shell.diagnostics(&e.0);
            1
        }
    };
    // In-flight helper processes (bash steps) are left to finish on their own.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}
