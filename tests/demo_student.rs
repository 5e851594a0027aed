//! The demo-student module of the example, on three real redis-server nodes.

#[path = "../examples/demo_student/student.rs"]
#[allow(dead_code)]
mod student;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use redlock::{Error, LockOptions};
use student::{ControllerStudent, MetaRedlock, StudentLock};
use support::{quick, Nodes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_one_resource_take_turns_and_others_run_alongside() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("demo", quick()).await;
    let controller = ControllerStudent::new(&engine);
    let [a, b, c3, d, e, f] = controller.six_requests().await;
    let mut visits42: Vec<String> = [a, b, c3].into_iter().map(Result::unwrap).collect();
    visits42.sort();
    assert_eq!(
        visits42,
        [
            "user 42: visit #1",
            "user 42: visit #2",
            "user 42: visit #3"
        ],
        "no visit lost"
    );
    assert_eq!(d.unwrap(), "user 7: visit #1");
    assert_eq!(e.unwrap(), "some result");
    assert_eq!(f.unwrap(), "some result");

    // Per resource, the journal alternates enter/leave: no two holders at once.
    let journal = controller.journal();
    let mut inside: HashMap<&str, Option<u32>> = HashMap::new();
    for event in &journal {
        let holder = inside.entry(event.resource.as_str()).or_default();
        if event.enter {
            assert_eq!(
                *holder, None,
                "two holders of {}: {journal:#?}",
                event.resource
            );
            *holder = Some(event.request);
        } else {
            assert_eq!(*holder, Some(event.request));
            *holder = None;
        }
    }
    // Different resources overlapped: user 7 entered before user 42's first holder left.
    let first_leave_42 = journal
        .iter()
        .find(|e| e.resource == "user-42" && !e.enter)
        .unwrap()
        .at;
    let enter_7 = journal
        .iter()
        .find(|e| e.resource == "user-7" && e.enter)
        .unwrap()
        .at;
    assert!(enter_7 < first_leave_42, "{journal:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_methods_lock_the_module_keys() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("demo", quick()).await;
    let redlock = MetaRedlock::new(&engine);
    let key = redlock.key(&StudentLock::User { id: 42 }).unwrap();
    assert_eq!(key, "redlock_{demo}:~:demo-student.user-42");

    let nodes = &nodes;
    let held = redlock
        .lock_user(42, |ctx| async move {
            assert_eq!(ctx.resources(), ["demo-student.user-42"]);
            nodes.values("redlock_{demo}:~:demo-student.user-42").await
        })
        .await
        .unwrap();
    assert!(held.iter().all(Option::is_some), "{held:?}");

    // The generic form and the `_with` form reach the same key.
    let guard = engine
        .acquire(&["demo-student.user-42"], LockOptions::default())
        .await
        .unwrap();
    let busy = redlock
        .lock_user_with(
            42,
            LockOptions::default().wait(Duration::from_millis(100)),
            |_| async {},
        )
        .await;
    assert!(matches!(busy, Err(Error::NotAcquired { .. })), "{busy:?}");
    let busy = redlock
        .lock_with(
            StudentLock::User { id: 42 },
            LockOptions::default().wait(Duration::from_millis(100)),
            |_| async {},
        )
        .await;
    assert!(matches!(busy, Err(Error::NotAcquired { .. })), "{busy:?}");
    guard.release().await.unwrap();

    let level = redlock
        .lock_isolate_name(|_| async { redlock::current_level() })
        .await
        .unwrap();
    assert_eq!(level, 1);
}

#[redlock::meta_redlock(module = "demo-student", meta = NamedRedlock)]
enum NamedLock {
    #[resource("user-{name}")]
    User { name: String },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_that_would_break_the_key_are_rejected() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("demo", quick()).await;
    let named = NamedRedlock::new(&engine);
    let long = "x".repeat(redlock::MAX_RESOURCE_LEN);
    for bad in ["", "line\nbreak", "nul\0", long.as_str()] {
        let ran = std::sync::atomic::AtomicBool::new(false);
        let err = named
            .lock_user(bad.to_owned(), |_| async {
                ran.store(true, std::sync::atomic::Ordering::SeqCst)
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidResource { .. }),
            "{bad:?}: {err}"
        );
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        assert!(named
            .key(&NamedLock::User {
                name: bad.to_owned()
            })
            .is_err());
    }
    let err = named
        .lock_user(String::new(), |_| async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("placeholder `{name}`"), "{err}");
    // Hostile but printable text is fine: it stays inside the key.
    let ok = named.lock_user("a:b{c}".to_owned(), |ctx| async move {
        ctx.keys().next().map(str::to_owned)
    });
    assert_eq!(
        ok.await.unwrap().as_deref(),
        Some("redlock_{demo}:~:demo-student.user-a:b{c}")
    );
}
