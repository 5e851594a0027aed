use redlock_core::meta_redlock;

#[meta_redlock(module = "demo-student", ttl = 5)]
pub enum StudentLock {
    Name,
}

fn main() {}
