use redlock_core::{meta_redlock, IsolateOptions, LockOptions, Redlock};

#[meta_redlock(module = "demo-student")]
pub enum StudentLock {
    Name,
    AuthProvider,
    #[resource("user-{id}")]
    User { id: u64 },
    #[resource("class-{year}-{room}")]
    Class { year: u16, room: String },
    // Field names equal to the generated parameters do not clash.
    #[resource("odd-{f}-{options}")]
    Odd { f: u8, options: u8 },
}

pub struct Scope {
    pub redlock: MetaRedlock,
}

async fn run(engine: Redlock) -> redlock_core::Result<()> {
    let scope = Scope { redlock: MetaRedlock::new(&engine) };
    let n: i32 = scope.redlock.lock_name(|_ctx| async { 1 }).await?;
    let s: &str = scope.redlock.lock_user(42, |ctx| async move {
        let _ = ctx.is_lost();
        "some result"
    }).await?;
    scope.redlock.lock_class(2026, "3b".into(), |_ctx| async {}).await?;
    scope.redlock.lock_auth_provider_with(LockOptions::default(), |_ctx| async {}).await?;
    scope.redlock.lock_isolate_user(1, |_ctx| async {}).await?;
    scope.redlock.lock_isolate_user_with(1, IsolateOptions::default().level(2), |_ctx| async {}).await?;
    scope.redlock.lock_odd(1, 2, |_ctx| async {}).await?;
    scope.redlock.lock(StudentLock::Class { year: 1, room: "a".into() }, |_ctx| async {}).await?;
    let _ = scope.redlock.key(&StudentLock::Name)?;
    let _ = (n, s);
    Ok(())
}

fn main() {
    assert_eq!(StudentLock::MODULE, "demo-student");
    assert_eq!(StudentLock::AuthProvider.to_string(), "auth-provider");
    assert_eq!(StudentLock::User { id: 42 }.to_string(), "user-42");
    assert_eq!(StudentLock::User { id: 42 }.resource(), "demo-student.user-42");
    assert_eq!(StudentLock::User { id: 42 }.template(), "user-{id}");
    let class = StudentLock::Class { year: 2026, room: "3b".into() };
    assert_eq!(class.to_string(), "class-2026-3b");
    let _ = run;
}
