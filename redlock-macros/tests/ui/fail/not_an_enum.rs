use redlock_core::meta_redlock;

#[meta_redlock(module = "demo-student")]
pub struct StudentLock {
    id: u64,
}

fn main() {}
