use redlock_core::meta_redlock;

#[meta_redlock(module = "demo-student")]
pub enum StudentLock<T> {
    #[resource("user-{id}")]
    User { id: T },
}

fn main() {}
