//! The HTTP capture request as the endpoint sees it, from arbitrary bytes: method,
//! path, query, Host and Authorization, on a Unix and on a TCP policy. Every decision
//! is a capture or a refusal with a status the design allows; a capture's options
//! survive a round trip through the query string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcapcast_core::endpoint::{parse_query, to_query, Policy, Request, Verdict};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n');
    let mut next = || fields.next();
    let method = next().unwrap_or("POST");
    let path = next().unwrap_or("/capture");
    let query = next();
    let host = next();
    let authorization = next();
    let authority = next();
    let has_body = data.first().is_some_and(|b| b & 1 == 1);
    let request = Request {
        method,
        path,
        query,
        authority,
        host,
        authorization,
        has_body,
    };
    let tcp = Policy::tcp(
        "192.0.2.1:8080".parse().unwrap(),
        Some("secret".to_owned()),
        vec!["capture.example".to_owned()],
    )
    .unwrap();
    for policy in [Policy::unix(), tcp] {
        match policy.decide(&request) {
            Verdict::Capture(options) => {
                let again = parse_query(&to_query(&options)).expect("own query parses");
                assert_eq!(again, options);
            }
            Verdict::Refuse { status, reason } => {
                assert!(matches!(status, 400 | 401 | 403 | 404 | 405), "{status}");
                assert!(!reason.is_empty() && !reason.contains('\n'));
            }
        }
    }
    if let Some(query) = query {
        if let Ok(options) = parse_query(query) {
            assert_eq!(parse_query(&to_query(&options)).expect("round trip"), options);
        }
    }
});
