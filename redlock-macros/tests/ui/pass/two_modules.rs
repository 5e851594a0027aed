//! Two modules' resources side by side, with the struct names given explicitly.
use redlock_core::{meta_redlock, Redlock};

#[meta_redlock(module = "demo-student", meta = StudentRedlock)]
enum StudentLock {
    Name,
}

#[meta_redlock(module = "demo-teacher", meta = TeacherRedlock, crate = "redlock_core")]
enum TeacherLock {
    Name,
    #[resource("course-{code}")]
    Course { code: &'static str },
}

async fn run(engine: Redlock) -> redlock_core::Result<()> {
    StudentRedlock::new(&engine).lock_name(|_| async {}).await?;
    TeacherRedlock::new(&engine).lock_course("rust-101", |_| async {}).await?;
    Ok(())
}

fn main() {
    assert_eq!(StudentLock::Name.resource(), "demo-student.name");
    assert_eq!(TeacherLock::Name.resource(), "demo-teacher.name");
    let _ = run;
}
