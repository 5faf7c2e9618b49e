use clap::Parser;

fn main() {
    let cli = match swaa_chat::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => swaa_chat::cli::usage_exit(e),
    };
    if let Err(e) = swaa_chat::cli::main_with(cli) {
        // One line that says what to do; the whole chain (and any backtrace) is in the log.
        eprintln!("error: {}", swaa_chat::cli::error_line(&e));
        std::process::exit(swaa_chat::cli::exit_code(&e));
    }
}
