//! The miner's behaviour: grouping, stable ids, parameters, snapshots,
//! threads, and the cap.

use super::*;

fn miner() -> Miner {
    Miner::with_defaults()
}

#[test]
fn keeps_lines_differing_in_one_meaningful_word_apart() {
    let m = miner();
    let a = m.add("VM Started");
    let b = m.add("VM Paused");
    assert_ne!(a.template_id, b.template_id);
    assert_eq!(m.add("VM Started").template_id, a.template_id);
    assert_eq!(m.templates().len(), 2);
}

#[test]
fn merges_lines_differing_only_in_variables() {
    let m = miner();
    let a = m.add("Connection from 10.0.0.1 closed");
    let b = m.add("Connection from 10.0.0.2 closed");
    assert!(a.is_new && !b.is_new);
    assert_eq!(a.template_id, b.template_id);
    assert_eq!(&*b.template, "Connection from <IP> closed");
    // A plain word becomes a variable once three distinct words were
    // seen at its place; earlier ids then resolve to the merged one.
    let c = m.add("Invalid user admin from 1.2.3.4 port 22");
    let d = m.add("Invalid user oracle from 1.2.3.5 port 23");
    assert_ne!(c.template_id, d.template_id);
    let e = m.add("Invalid user test from 1.2.3.6 port 24");
    assert_eq!(&*e.template, "Invalid user <*> from <IP> port <NUM>");
    assert_eq!(m.resolve(c.template_id), Some(e.template_id));
    assert_eq!(m.resolve(d.template_id), Some(e.template_id));
    assert_eq!(m.template(d.template_id).unwrap().count, 3);
    assert_eq!(
        m.add("Invalid user guest from 1.2.3.7 port 25").template_id,
        e.template_id
    );
}

#[test]
fn a_variable_spanning_several_tokens_gives_one_template() {
    let m = miner();
    let a = m.add("acquire lock tag=\"alpha_1\" for uid 5");
    let b = m.add("acquire lock tag=\"beta_2\" for uid 6");
    // Values of one key generalise to `key=<*>`.
    assert_eq!(&*b.template, "acquire lock tag=<*> for uid <NUM>");
    let c = m.add("acquire lock tag=\"View Lock\" for uid 7");
    assert_eq!(&*c.template, "acquire lock <*> for uid <NUM>");
    assert_eq!((a.template_id, a.template_id), (b.template_id, c.template_id));
    let p = m
        .parameters(a.template_id, "acquire lock tag=\"View Lock\" for uid 7")
        .unwrap();
    assert_eq!(p, ["tag=\"View Lock\"", "7"]);
    // Lists of masked values of any length give one template.
    let d = m.add("ask 10.0.0.1:50010 to delete blk_-1");
    let e = m.add("ask 10.0.0.2:50010 to delete blk_-1 blk_2 blk_-3");
    assert_eq!(d.template_id, e.template_id);
    assert_eq!(&*e.template, "ask <IP> to delete blk_<NUM>");
}

#[test]
fn a_word_place_turns_variable_only_when_its_values_are_rare() {
    let m = miner();
    // Interface names that each come back are an enumeration.
    for _ in 0..3 {
        m.add("link up via interface alt0");
        m.add("link up via interface ee0");
    }
    let s = m.add("link up via interface scip0");
    assert_eq!(&*s.template, "link up via interface scip0");
    assert_eq!(m.templates().len(), 3);
    // User names mostly show up once: a variable.
    m.add("Invalid user admin from 1.2.3.4");
    m.add("Invalid user test from 1.2.3.5");
    let v = m.add("Invalid user oracle from 1.2.3.6");
    assert_eq!(&*v.template, "Invalid user <*> from <IP>");
    assert_eq!(m.templates().len(), 4);
}

#[test]
fn long_key_value_lines_keep_keys_and_meaningful_values() {
    let m = miner();
    let line = |job: &str, state: &str| {
        format!("scheduler tick job=batch_{job} queue=q_{job} owner=svc_{job} host=node-{job}.example state={state} retries=0")
    };
    let a = m.add(&line("a1", "RUNNING"));
    let b = m.add(&line("b2", "RUNNING"));
    assert_eq!(a.template_id, b.template_id);
    assert_eq!(
        &*b.template,
        "scheduler tick job=<*> queue=<*> owner=<*> host=<*> state=RUNNING retries=<NUM>"
    );
    // One meaningful word differs in a long line: another event.
    let c = m.add(&line("c3", "FAILED"));
    assert_ne!(c.template_id, a.template_id);
    assert_eq!(m.add(&line("d4", "FAILED")).template_id, c.template_id);
    assert_eq!(m.add(&line("e5", "RUNNING")).template_id, a.template_id);
    // Another key in that place is another structure.
    let d = m.add("getRecentTasks: num=20,flags=62,totalTasks=46");
    let e = m.add("getRecentTasks: topActivity=ComponentInfo{com.a/com.a.Main}");
    let f = m.add("getRecentTasks: topActivity=ComponentInfo{com.b/com.b.Splash}");
    assert_ne!(d.template_id, e.template_id);
    assert_eq!(e.template_id, f.template_id);
    assert_eq!(&*f.template, "getRecentTasks: topActivity=<*>");
}

#[test]
fn ids_are_stable_and_match_only_changes_nothing() {
    let m = miner();
    let a = m.add("disk sda1 full");
    assert!(m.match_only("disk sdb2 almost full").is_none());
    assert_eq!(m.match_only("disk sda1 full").unwrap().id, a.template_id);
    let b = m.add("user 7 logged out");
    let c = m.add("user 8 logged out");
    assert_eq!(b.template_id, c.template_id);
    assert_eq!(m.match_only("user 9 logged out").unwrap().count, 2);
    assert_eq!(
        m.templates().iter().map(|t| t.id).collect::<Vec<_>>(),
        [a.template_id, b.template_id]
    );
}

#[test]
fn extracts_parameters_from_raw_lines() {
    let p = extract_parameters(
        "Received block blk_<NUM> of size <NUM> from /<IP>",
        "Received block blk_-1608999687919862906 of size 91178 from /10.250.10.6",
    )
    .unwrap();
    assert_eq!(p, ["-1608999687919862906", "91178", "10.250.10.6"]);
    let p = extract_parameters(
        "Fan speeds ( <NUM> **** <NUM> )",
        "Fan speeds ( 3552 3534  3391 **** 3515 3479 )",
    )
    .unwrap();
    assert_eq!(p, ["3552 3534  3391", "3515 3479"]);
    assert!(extract_parameters("user <*> logged in", "user bob logged out").is_none());
}

#[test]
fn snapshot_round_trips() {
    let m = miner();
    for l in [
        "a b 1",
        "a b 2",
        "x y z",
        "VM Started",
        "VM Paused",
        "VM Stopped",
        "user tag=x_1 logged in",
        "user tag=x_2 logged in",
        "user tag=\"a b\" logged in",
    ] {
        m.add(l);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("templates.json");
    m.save(&path).unwrap();
    let r = Miner::load(&path, Masker::builtin()).unwrap();
    assert_eq!(r.templates(), m.templates());
    let next = r.add("new line entirely here");
    assert!(next.is_new);
    assert!(m.templates().iter().all(|t| t.id < next.template_id));
    assert_eq!(r.add("a b 3").template_id, m.add("a b 3").template_id);
    assert_eq!(r.add("VM Paused").template_id, m.add("VM Paused").template_id);
    assert_eq!(
        r.add("user tag=\"c d\" logged in").template_id,
        m.add("user tag=\"c d\" logged in").template_id
    );
    // Sibling bookkeeping survives: the third user name merges in both.
    for who in ["root", "admin"] {
        m.add(&format!("session opened for user {who} by sshd"));
    }
    let r = Miner::from_json(&m.to_json(), "snap", Masker::builtin()).unwrap();
    let third = "session opened for user git by sshd";
    let (x, y) = (r.add(third), m.add(third));
    assert_eq!(
        (x.template_id, &*x.template),
        (y.template_id, "session opened for user <*> by sshd")
    );
    assert_eq!(r.templates(), m.templates());
}

#[test]
fn bad_snapshots_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.json");
    let m = miner();
    m.add("hello world");
    let good = m.to_json();

    std::fs::write(
        &path,
        good.replace("\"format_version\": 2", "\"format_version\": 99"),
    )
    .unwrap();
    let err = Miner::load(&path, Masker::builtin()).unwrap_err().to_string();
    assert!(
        err.contains("snap.json") && err.contains("format_version 99") && err.contains("versions 1 to 2"),
        "{err}"
    );

    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let err = Miner::load(&path, Masker::builtin()).unwrap_err().to_string();
    assert!(
        err.contains("snap.json") && err.contains("corrupted or truncated"),
        "{err}"
    );

    std::fs::write(&path, "{\"templates\": []}").unwrap();
    let err = Miner::load(&path, Masker::builtin()).unwrap_err().to_string();
    assert!(err.contains("missing `format_version`"), "{err}");

    std::fs::write(&path, good.replace("\"next_id\": 2", "\"next_id\": 1")).unwrap();
    let err = Miner::load(&path, Masker::builtin()).unwrap_err().to_string();
    assert!(err.contains("not below next_id"), "{err}");

    let err = Miner::load(&dir.path().join("missing.json"), Masker::builtin())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing.json") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn shared_between_threads() {
    let m = std::sync::Arc::new(miner());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    m.add(&format!("worker {t} finished job {i} in {} ms", i * 3));
                    m.add(&format!("queue depth {i}"));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let t = m.templates();
    assert_eq!(t.iter().map(|t| t.count).sum::<u64>(), 1600);
    assert_eq!(t.len(), 2, "{t:?}");
}

/// A plain word (letters only) unique to `i`.
fn word(i: usize) -> String {
    let mut w = String::from("w");
    let mut i = i;
    loop {
        w.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            break w;
        }
    }
}

/// A line whose template no other `distinct(j)` joins: its own first
/// word (its own bucket) and plain words only.
fn distinct(i: usize) -> String {
    format!("{} started {} now", word(i), word(i + 100_000))
}

fn capped(cap: usize) -> Miner {
    Miner::new(
        MinerConfig {
            max_templates: cap,
            ..MinerConfig::default()
        },
        Masker::builtin(),
    )
}

#[test]
fn a_cap_bounds_the_templates_and_counts_evictions() {
    let (cap, n) = (10, 250);
    let m = capped(cap);
    let mut ids = Vec::new();
    for i in 0..n {
        let r = m.add(&distinct(i));
        assert!(r.is_new);
        ids.push(r.template_id);
        assert!(m.len() <= cap, "{} templates", m.len());
    }
    m.check_consistency().unwrap();
    assert_eq!(m.len(), cap);
    assert_eq!(m.evicted(), (n - cap) as u64);
    // The last `cap` lines' templates are the ones kept.
    let kept: Vec<u64> = m.templates().iter().map(|t| t.id).collect();
    assert_eq!(kept, ids[n - cap..]);
    assert!(ids[..n - cap].iter().all(|&id| m.resolve(id).is_none()));
    // Without a cap nothing goes.
    let u = miner();
    for i in 0..n {
        u.add(&distinct(i));
    }
    assert_eq!((u.len(), u.evicted()), (n, 0));
}

#[test]
fn the_least_recently_matched_template_is_evicted_first() {
    let m = capped(3);
    let [a, b, c] = [0, 1, 2].map(|i| m.add(&distinct(i)).template_id);
    assert_eq!(m.add(&distinct(0)).template_id, a); // a is now newer than b and c
    let d = m.add(&distinct(3)).template_id;
    assert_eq!(m.evicted(), 1);
    assert_eq!(m.resolve(b), None);
    assert_eq!(m.templates().iter().map(|t| t.id).collect::<Vec<_>>(), [a, c, d]);
    // Matching through the write path (a line that widens the template)
    // counts as use too.
    assert_eq!(m.add("user 7 logged out").template_id, d + 1); // evicts a? no: c
    assert_eq!(m.resolve(c), None);
    assert_eq!(m.add(&distinct(0)).template_id, a);
    assert_eq!(m.add("user 8 logged out").template_id, d + 1);
    let e = m.add(&distinct(4)).template_id; // evicts d, the oldest match
    assert_eq!(m.resolve(d), None);
    assert_eq!(
        m.templates().iter().map(|t| t.id).collect::<Vec<_>>(),
        [a, d + 1, e]
    );
    m.check_consistency().unwrap();
}

#[test]
fn an_evicted_templates_lines_start_a_new_template() {
    let m = capped(2);
    let a = m.add("Connection from 10.0.0.1 closed");
    m.add("Connection from 10.0.0.2 closed");
    m.add(&distinct(0));
    m.add(&distinct(1));
    assert_eq!(m.resolve(a.template_id), None);
    assert!(m.match_only("Connection from 10.0.0.3 closed").is_none());
    let again = m.add("Connection from 10.0.0.3 closed");
    assert!(again.is_new);
    assert!(again.template_id > a.template_id + 2, "ids are never reused");
    assert_eq!(&*again.template, "Connection from <IP> closed");
    assert_eq!(m.template(again.template_id).unwrap().count, 1);
    m.check_consistency().unwrap();
}

#[test]
fn eviction_of_a_merged_template_drops_the_ids_merged_into_it() {
    let m = capped(3);
    let ids: Vec<u64> = ["admin", "oracle", "test"]
        .iter()
        .map(|u| m.add(&format!("Invalid user {u} from 1.2.3.4")).template_id)
        .collect();
    let merged = m.resolve(ids[1]).unwrap();
    assert_eq!(merged, ids[0]);
    assert_eq!(m.template(merged).unwrap().template, "Invalid user <*> from <IP>");
    assert_eq!(m.len(), 1);
    m.check_consistency().unwrap();
    for i in 0..3 {
        m.add(&distinct(i));
        m.check_consistency().unwrap();
    }
    assert!(
        ids.iter().all(|&id| m.resolve(id).is_none()),
        "merged ids go with it"
    );
    assert_eq!(m.evicted(), 1);
}

/// Siblings, merges, variadic merges and evictions mixed, with the token
/// table compacted often: the indexes stay consistent and the grouping
/// of what is kept matches an uncapped miner where the cap does not
/// bite.
#[test]
fn eviction_keeps_merges_siblings_and_tokens_consistent() {
    let lines = |i: usize| -> Vec<String> {
        vec![
            format!("Invalid user {} from 10.0.{}.{}", word(i % 7), i % 5, i % 250),
            format!(
                "VM {} on host{}",
                ["Started", "Paused", "Stopped", "Resumed"][i % 4],
                i % 3
            ),
            format!(
                "acquire lock tag=\"{}\" for uid {i}",
                if i % 3 == 0 { "a b".into() } else { word(i) }
            ),
            format!("link up via interface {}", ["alt0", "ee0", "scip0"][i % 3]),
            distinct(i),
            format!("session opened for user {} by sshd", word(i)),
            format!("job {} finished in {} ms", word(i % 13), i),
        ]
    };
    for cap in [2, 3, 5, 8, 40] {
        let m = capped(cap);
        for i in 0..300 {
            for l in lines(i) {
                // Compact the token table at every change, half the time.
                m.write().gc_at = if i % 2 == 0 { 0 } else { usize::MAX };
                let r = m.add(&l);
                assert_eq!(m.resolve(r.template_id), Some(r.template_id));
                if let Err(e) = m.check_consistency() {
                    panic!("cap {cap}, line {i} {l:?}: {e}");
                }
            }
        }
        assert!(m.len() <= cap);
        let back = Miner::from_json(&m.to_json(), "snap", Masker::builtin()).unwrap();
        back.check_consistency().unwrap();
        assert_eq!(back.templates(), m.templates());
    }
}

#[test]
fn a_snapshot_keeps_the_cap_the_lru_order_and_the_evictions() {
    let m = capped(4);
    for i in 0..6 {
        m.add(&distinct(i));
    }
    m.add(&distinct(3)); // 3 becomes the most recent
    m.add("user 1 logged in");
    let json = m.to_json();
    let evicted_then = m.evicted();
    assert_eq!(evicted_then, 3);
    assert!(json.contains("\"format_version\": 2") && json.contains("\"max_templates\": 4"));
    let r = Miner::from_json(&json, "snap", Masker::builtin()).unwrap();
    assert_eq!(r.templates(), m.templates());
    assert_eq!((r.evicted(), r.config().max_templates), (m.evicted(), 4));
    r.check_consistency().unwrap();
    // Both go on evicting the same templates, in the same order.
    for i in [2, 7, 8, 3, 9, 10, 11] {
        let (x, y) = (m.add(&distinct(i)), r.add(&distinct(i)));
        assert_eq!(x, y);
        assert_eq!(r.templates(), m.templates());
    }
    assert_eq!(r.evicted(), m.evicted());
    assert_eq!(r.to_json(), m.to_json());
    // A lower cap on restore evicts the least recently used at once.
    let r = Miner::from_json(&json, "snap", Masker::builtin())
        .unwrap()
        .with_max_templates(2);
    let kept: Vec<String> = r.templates().into_iter().map(|t| t.template).collect();
    assert_eq!(kept, [distinct(3), "user <NUM> logged in".to_string()]);
    assert_eq!(r.evicted(), evicted_then + 2);
}

#[test]
fn a_version_1_snapshot_still_loads() {
    let m = miner();
    for l in ["a b 1", "a b 2", "VM Started", "VM Paused", "x y z"] {
        m.add(l);
    }
    // Version 1 had no ticks, no eviction count and no max_templates.
    let mut v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    v["format_version"] = 1.into();
    v.as_object_mut().unwrap().remove("tick");
    v.as_object_mut().unwrap().remove("evicted");
    v["config"].as_object_mut().unwrap().remove("max_templates");
    for t in v["templates"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("last_used");
    }
    let text = serde_json::to_string(&v).unwrap();
    assert!(!text.contains("last_used") && !text.contains("max_templates"));
    let r = Miner::from_json(&text, "v1", Masker::builtin()).unwrap();
    assert_eq!(r.templates(), m.templates());
    assert_eq!((r.evicted(), r.config().max_templates), (0, 0));
    assert_eq!(r.add("a b 3").template_id, m.add("a b 3").template_id);
    // With a cap given later, ties (no ticks) go to the oldest id.
    let r = Miner::from_json(&text, "v1", Masker::builtin())
        .unwrap()
        .with_max_templates(2);
    let ids: Vec<u64> = r.templates().iter().map(|t| t.id).collect();
    let all: Vec<u64> = m.templates().iter().map(|t| t.id).collect();
    assert_eq!(ids, all[all.len() - 2..]);
    assert_eq!(r.evicted(), all.len() as u64 - 2);
    r.check_consistency().unwrap();
}

#[test]
fn a_capped_miner_is_shared_between_threads() {
    let m = std::sync::Arc::new(capped(50));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    m.add(&format!("worker {t} finished job {i} in {} ms", i * 3));
                    m.add(&distinct(t * 1000 + i));
                    assert!(m.len() <= 50);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    m.check_consistency().unwrap();
    assert_eq!(m.len(), 50);
    // The hot template is matched all the time: it is never evicted.
    assert!(m.match_only("worker 1 finished job 1 in 3 ms").is_some());
    let created = m.to_json().matches("\"id\"").count() as u64; // live templates
    assert_eq!(created, 50);
    assert!(m.evicted() >= 1200 - 50);
}

#[test]
fn names_that_differ_only_in_their_numbers_are_one_variable() {
    // Host and device names (`gige1`..`gige7`, `node-D0`) that each come
    // back are values of one variable, not an enumeration of words.
    let m = miner();
    for i in 0..20 {
        m.add(&format!("gige{} temperature normal", i % 7 + 1));
        m.add(&format!("domain status node-D{} not responding", i % 4));
    }
    let t: Vec<String> = m.templates().into_iter().map(|t| t.template).collect();
    assert_eq!(t, ["<*> temperature normal", "domain status <*> not responding"]);
    assert!(super::tokens::same_shape("gige1", "gige17"));
    assert!(!super::tokens::same_shape("alt0", "ee0"));
    assert!(!super::tokens::same_shape("Started", "Paused"));
}

#[test]
fn lines_that_share_only_masked_values_are_not_one_template() {
    // A timestamp and a pid agree on every raw line; they are no evidence
    // that two lines are one event (raw Android/Hadoop lines drifted into
    // `<TS> <NUM> <*>` templates this way).
    let m = miner();
    let a = m.add("2015-10-18 18:01:49,228 1702 org.apache.App:");
    let b = m.add("2015-10-18 18:01:53,447 1702 org.apache.Requestor:");
    assert_ne!(a.template_id, b.template_id);
    assert_eq!(&*b.template, "<TS> <NUM> org.apache.Requestor:");
    // A literal word in common still lets a value vary.
    let c = m.add("2015-10-18 18:01:49,228 1702 started job_1");
    let d = m.add("2015-10-18 18:01:55,001 1703 started job_2");
    assert_eq!(c.template_id, d.template_id);
}

#[test]
fn a_template_does_not_drift_into_variables_and_a_stop_word() {
    // Each widening is small, but literal agreement must cover half of the
    // places that could agree: `Snapshotting: <HEX> to <PATH>` shares only
    // `to` with `<*> set to <NUM>` and is another event.
    let m = miner();
    m.add("alpha.x1 set to 1");
    let a = m.add("beta.y2 set to 2");
    assert_eq!(&*a.template, "<*> set to <NUM>");
    let b = m.add("Snapshotting: 0x3f to /var/lib/x");
    assert_ne!(a.template_id, b.template_id);
    assert_eq!(&*m.template(a.template_id).unwrap().template, "<*> set to <NUM>");
}

#[test]
fn a_variable_keeps_the_punctuation_and_quotes_around_its_values() {
    let m = miner();
    m.add("Read package: Package_for_KB31~amd64~~6.1.1.0, State: 112");
    let a = m.add("Read package: Package_for_KB29~x86~~6.1.3.0, State: 7");
    assert_eq!(&*a.template, "Read package: <*>, State: <NUM>");
    m.add("into registry key 'SOFTWARE' from path 'x'");
    let b = m.add("into registry key '{bf1a}GLOBALROOT/Device' from path 'x'");
    assert_eq!(&*b.template, "into registry key '<*>' from path 'x'");
    // A value without the comma is still the same event; the comma goes.
    let c = m.add("Read package: Package_for_KB77~amd64~~6.1.1.0 State: 1");
    assert_eq!(c.template_id, a.template_id);
    assert_eq!(&*c.template, "Read package: <*> State: <NUM>");
    assert_eq!(
        m.parameters(b.template_id, "into registry key 'A B' from path 'x'")
            .unwrap(),
        ["A B"]
    );
}

#[test]
fn many_distinct_words_at_one_place_are_a_variable_even_when_they_recur() {
    // Six host names, each coming back: no longer an enumeration.
    let hosts = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let m = miner();
    for h in &hosts[..5] {
        for _ in 0..3 {
            m.add(&format!("connection to {h} lost"));
        }
    }
    assert_eq!(
        m.templates().len(),
        5,
        "five recurring words are still kept apart"
    );
    let last = m.add("connection to foxtrot lost");
    assert_eq!(&*last.template, "connection to <*> lost");
    assert_eq!(m.templates().len(), 1);
    // Off: every recurring word keeps its template.
    let off = Miner::new(
        MinerConfig {
            word_variable_distinct: 0,
            ..MinerConfig::default()
        },
        Masker::builtin(),
    );
    for h in hosts {
        for _ in 0..3 {
            off.add(&format!("connection to {h} lost"));
        }
    }
    assert_eq!(off.templates().len(), 6);
}
