use spillway_router::{Flags, start};

#[tokio::main]
async fn main() {
    let flags: Flags = spillway_plumbing::config::parse();
    spillway_plumbing::init_logging("info");
    spillway_plumbing::logging::run_until_signal(start(flags).await).await
}
