use clap::Parser;

fn main() {
    let cli = swaa_chat::cli::Cli::parse();
    if let Err(e) = swaa_chat::cli::main_with(cli) {
        // One line that says what to do; the whole chain (and any backtrace) is in the log.
        let msg = format!("{e:#}");
        let line = msg.lines().next().unwrap_or_default();
        eprintln!("error: {}", swaa_chat::units::printable(line));
        std::process::exit(swaa_chat::cli::exit_code(&e));
    }
}
