use redlock_core::meta_redlock;

#[meta_redlock(module = "demo-student")]
pub enum StudentLock {
    Name,
    #[resource("name")]
    Alias,
    #[resource("user-{id}")]
    User { id: u64 },
    #[resource("user-{name}")]
    UserByName { name: String },
}

fn main() {}
