//! The demo-student module, run as a newcomer's first program.
//!
//! ```text
//! cargo run --example demo_student                     # in-process node, no Redis needed
//! REDLOCK_NODES=redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003 \
//!     cargo run --example demo_student                 # the same on real Redis nodes
//! ```
//!
//! Six concurrent requests: three visit user 42, one visits user 7, two use
//! the `name` resource. Requests on one resource take turns; requests on
//! different resources run side by side.

#[path = "../shared/engine.rs"]
mod engine;
mod student;

use redlock::Redlock;
use student::ControllerStudent;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = engine::from_env("demo").await?;
    let controller = ControllerStudent::new(&engine);

    let results = controller.six_requests().await;

    println!("\ntimeline (ms since start; one column per resource):");
    for event in controller.journal() {
        let column = match event.resource.as_str() {
            "user-42" => 0,
            "user-7" => 1,
            _ => 2,
        };
        let what = if event.enter { "enter" } else { "leave" };
        println!(
            "{:>6.1}  {:indent$}request {} {what} {}",
            event.at.as_secs_f64() * 1000.0,
            "",
            event.request,
            event.resource,
            indent = column * 28
        );
    }
    println!("\nresults:");
    for (request, result) in results.into_iter().enumerate() {
        println!("  request {}: {}", request + 1, result?);
    }
    println!(
        "\nkey of user 42: {}",
        controller_key(&engine, student::StudentLock::User { id: 42 })?
    );
    // Before the process ends: releases still in flight reach the nodes.
    engine.close().await;
    Ok(())
}

fn controller_key(engine: &Redlock, resource: student::StudentLock) -> redlock::Result<String> {
    student::MetaRedlock::new(engine).key(&resource)
}
