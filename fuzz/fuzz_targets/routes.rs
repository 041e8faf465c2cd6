//! Route matching on arbitrary paths: never a panic; a routed path starts
//! with its route's prefix, loses exactly `/api`, and has no dot segment,
//! plain or percent-encoded.
#![no_main]

use gateway::routes::find;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    if let Ok(Some((route, upstream))) = find(path) {
        assert!(path.starts_with(route.prefix));
        assert_eq!(format!("/api{upstream}"), path);
        for segment in path.split('/') {
            let lower = segment.to_ascii_lowercase();
            assert!(segment != "." && segment != "..", "{path}");
            assert!(lower != "%2e%2e" && lower != "%2e", "{path}");
        }
    }
});
