use redlock_core::meta_redlock;

#[meta_redlock(module = "demo-student")]
pub enum StudentLock {
    User { id: u64 },
}

fn main() {}
