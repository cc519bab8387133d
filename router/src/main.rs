use spillway_plumbing::config::{self, exit_bad_input};
use spillway_plumbing::logging::shutdown_signal;
use spillway_router::{Flags, start};

#[tokio::main]
async fn main() {
    let flags: Flags = config::parse();
    spillway_plumbing::init_logging("info");
    match start(flags).await {
        Ok(server) => {
            tokio::select! {
                _ = server => std::process::exit(1),
                _ = shutdown_signal() => tracing::info!("stopping on signal"),
            }
        }
        Err(e) => exit_bad_input(&e),
    }
}
