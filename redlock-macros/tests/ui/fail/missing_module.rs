use redlock_core::meta_redlock;

#[meta_redlock]
pub enum StudentLock {
    Name,
}

fn main() {}
