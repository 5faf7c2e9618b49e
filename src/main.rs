use clap::Parser;

fn main() {
    let cli = swaa_chat::cli::Cli::parse();
    if let Err(e) = swaa_chat::cli::main_with(cli) {
        // One line that says what to do; the whole chain (and any backtrace) is in the log.
        // A cause that the message already quotes is not repeated.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1).map(ToString::to_string) {
            if !msg.contains(&cause) {
                msg = format!("{msg}: {cause}");
            }
        }
        let line = msg.lines().next().unwrap_or_default();
        eprintln!("error: {}", swaa_chat::units::printable(line));
        std::process::exit(swaa_chat::cli::exit_code(&e));
    }
}
