use redlock_core::meta_redlock;

#[meta_redlock(module = "demo-student")]
pub enum StudentLock {
    #[resource("class-{year}{room}")]
    Class { year: u16, room: u16 },
}

fn main() {}
