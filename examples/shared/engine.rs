//! The engine the examples run on: the Redis nodes listed in `REDLOCK_NODES`
//! (comma-separated URLs), or else the in-process node.

use redlock::Redlock;

/// Builds the examples' engine for `app`, saying which nodes it uses.
pub async fn from_env(app: &str) -> redlock::Result<Redlock> {
    let builder = Redlock::builder().app(app);
    match std::env::var("REDLOCK_NODES") {
        Ok(nodes) => {
            println!("nodes: {nodes}");
            builder.nodes(nodes.split(',').map(str::trim)).build().await
        }
        Err(_) => {
            println!("nodes: in-process (set REDLOCK_NODES=redis://..,redis://.. for real Redis)");
            builder.in_memory().build().await
        }
    }
}
