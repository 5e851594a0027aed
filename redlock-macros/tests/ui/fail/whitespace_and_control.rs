use redlock_core::meta_redlock;

#[meta_redlock(module = "demo-student")]
pub enum StudentLock {
    #[resource("user {id}")]
    User { id: u64 },
    #[resource("tab\there")]
    Tab,
}

fn main() {}
