use redlock_core::{meta_redlock, Redlock};

#[meta_redlock(module = "demo-student")]
pub enum StudentLock {
    Name,
    #[resource("user-{id}")]
    User { id: u64 },
}

async fn run(engine: Redlock) {
    let redlock = MetaRedlock::new(&engine);
    let _ = redlock.lock_teacher(|_ctx| async {}).await;
}

fn main() {
    let _ = run;
}
