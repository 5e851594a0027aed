use redlock_core::meta_redlock;

pub struct Opaque;

#[meta_redlock(module = "demo-student")]
pub enum StudentLock {
    #[resource("user-{id}")]
    User { id: Opaque },
}

fn main() {}
