use clap::Parser;

fn main() {
    let cli = swaa_chat::cli::Cli::parse();
    if let Err(e) = swaa_chat::cli::main_with(cli) {
        // One line that says what to do; the whole chain (and any backtrace) is in the log.
        let msg = format!("{e:#}");
        eprintln!("error: {}", msg.lines().next().unwrap_or_default());
        std::process::exit(swaa_chat::cli::exit_code(&e));
    }
}
