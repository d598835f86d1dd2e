fn main() {
    let cli = anycloud::cli::parse(std::env::args_os());
    let shell = if cli.json_stream {
        let stream = anycloud::stream::Stream::stdout();
        anycloud::shell::Shell::streaming(cli.no_color, cli.quiet, cli.verbose, stream)
    } else {
        anycloud::shell::Shell::new(cli.no_color, cli.quiet, cli.verbose)
    };
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
            if let Some(stream) = shell.stream() {
                for d in &e.0 {
                    stream.diagnostic("error", d);
                }
            }
            shell.diagnostics(&e.0);
            1
        }
    };
    if let Some(kib) = peak_memory_kib() {
        shell.detail(&format!("peak memory: {:.1} MiB", kib as f64 / 1024.0));
    }
    // In-flight helper processes (bash steps) are left to finish on their own.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}

/// This process's peak resident memory (Linux's VmHWM), for `-v`.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
