use clap::Parser;

fn main() {
    let cli = swaa_chat::cli::Cli::parse();
    if let Err(e) = swaa_chat::cli::main_with(cli) {
        // One line that says what to do; details are in the log file.
        eprintln!("error: {e:#}");
        std::process::exit(swaa_chat::cli::exit_code(&e));
    }
}
