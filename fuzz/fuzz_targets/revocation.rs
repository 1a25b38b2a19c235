//! Arbitrary bytes as a page of the token service's revocation feed:
//! `RevocationSet::apply` on an empty set and on a set that already holds entries.
//!
//! Properties: no panic; a page that applies never leaves more entries than allowed
//! (or only subject entries, which are never dropped);
//! applying the same page again changes nothing; the shared form (`to_page`, which
//! the other workers apply) gives back the same set; every entry revokes what it says
//! and only that (a subject's tokens issued before `iat_before`, a token id); the next
//! poll path stays a plain path and query.
#![no_main]

use gatehouse::revocation::RevocationSet;
use gatehouse_fuzz::NOW;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MAX: usize = 64;

thread_local! {
    static BASE: RevocationSet = RevocationSet::default()
        .apply(
            br#"{"feed":"f1","cursor":7,"reset":true,"entries":[
                {"sub":"bob","iat_before":1799999990,"until":1800000600},
                {"sub":"old","iat_before":1700000000,"until":1700000600},
                {"jti":"j1","until":1800000600}]}"#,
            NOW,
            MAX,
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

fn check(set: &RevocationSet, page: &[u8]) {
    assert!(
        set.len() <= MAX || set.token_entries() == 0,
        "{} entries, {} of them token ids",
        set.len(),
        set.token_entries()
    );
    assert_eq!(
        set.apply(page, NOW, MAX).as_ref(),
        Ok(set),
        "applying twice differs"
    );
    let shared = set.to_page();
    assert_eq!(
        RevocationSet::default().apply(&shared, NOW, MAX).as_ref(),
        Ok(set),
        "to_page round trip"
    );

    let poll = set.poll_path("/revocations", 60);
    assert!(
        poll.bytes().all(|b| b.is_ascii_graphic() && b != b'#'),
        "{poll:?}"
    );
    assert!(
        poll.matches('?').count() <= 1 && poll.matches("&feed=").count() <= 1 && poll.ends_with("skew=60"),
        "{poll:?}"
    );

    let Ok(Value::Object(page)) = serde_json::from_slice::<Value>(&shared) else {
        panic!("to_page is not a JSON object");
    };
    for entry in page
        .get("entries")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        assert!(
            entry["until"].as_i64().is_some_and(|u| u >= NOW),
            "kept an expired entry {entry}"
        );
        if let Some(sub) = entry["sub"].as_str() {
            let before = entry["iat_before"].as_i64().unwrap_or_else(|| panic!("{entry}"));
            assert!(set.revokes(sub, None, None), "no iat: {entry}");
            if let Some(earlier) = before.checked_sub(1) {
                assert!(set.revokes(sub, Some(earlier), None), "{entry}");
            }
            assert!(!set.revokes(sub, Some(before), None), "{entry}");
        } else if let Some(jti) = entry["jti"].as_str() {
            assert!(set.revokes("", Some(0), Some(jti)), "{entry}");
        } else {
            panic!("entry without sub or jti: {entry}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = RevocationSet::default().apply(data, NOW, MAX) {
        check(&set, data);
    }
    BASE.with(|base| {
        if let Ok(set) = base.apply(data, NOW, MAX) {
            check(&set, data);
            assert!(
                !set.revokes("nobody", Some(0), Some("nothing")) || data.windows(6).any(|w| w == b"nobody")
            );
        }
    });
});
