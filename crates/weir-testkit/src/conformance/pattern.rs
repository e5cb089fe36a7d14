//! Pattern subscriptions.

use weir_core::Subscription;

use super::common::{group_config, tp};
use crate::harness::{
    create_topic, deadline, list, poll_members_until, produce_n, Member, Timeline,
};
use crate::Backend;

/// A pattern subscription reads the matching topics, picks up a matching topic created
/// later (a rebalance follows), and never touches a topic that does not match.
pub async fn pattern_subscription_picks_up_a_new_matching_topic(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let prefix = backend.unique("pattern");
    let first = format!("{prefix}-first");
    let unrelated = backend.unique("unrelated");
    create_topic(backend, &first, 1).await?;
    create_topic(backend, &unrelated, 1).await?;
    produce_n(backend, &first, 0, 0, 1).await?;
    produce_n(backend, &unrelated, 0, 0, 1).await?;
    let pattern = format!("{}-.*", regex::escape(&prefix));
    let subscription = Subscription::pattern(&pattern)?;
    let group = backend.unique("pattern-group");
    let mut a = Member::subscribe(
        backend,
        "a",
        group_config(backend, &group),
        subscription,
        &Timeline::new(),
    )
    .await?;
    let f0 = tp(&first, 0);
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        &format!("the record of {f0}, matching `{pattern}`"),
        |ms| !ms[0].offsets_of(&f0).is_empty(),
    )
    .await?;

    let later = format!("{prefix}-later");
    let all = create_topic(backend, &later, 2).await?;
    for p in 0..2 {
        produce_n(backend, &later, p, 0, 1).await?;
    }
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        &format!("{later}, created after subscribing to `{pattern}`, to be assigned and read"),
        |ms| all.iter().all(|p| !ms[0].offsets_of(p).is_empty()),
    )
    .await?;
    let u0 = tp(&unrelated, 0);
    for snapshot in &a.assignments {
        assert!(
            !snapshot.value.contains(&u0),
            "`{pattern}` should not match {unrelated}, yet it was assigned: {}",
            list(&snapshot.value)
        );
    }
    assert!(
        a.offsets_of(&u0).is_empty(),
        "records of {unrelated}, which does not match `{pattern}`, were delivered"
    );
    let mut expected = all.clone();
    expected.insert(f0);
    assert_eq!(
        a.assignment(),
        expected,
        "assignment of the pattern subscriber"
    );
    a.consumer.close().await?;
    Ok(())
}
