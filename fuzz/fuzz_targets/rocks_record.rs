//! The RocksDB channel's record decoder, over stored bytes that may be damaged. Half the
//! inputs are sealed with a valid checksum so the payload decoder behind the check is reached;
//! an event that decodes must encode back to the same record.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_rocks::record;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let seq = u64::from(mode) * 7919;
    let value = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut v = vec![record::FORMAT_VERSION];
        v.extend_from_slice(&record::checksum(seq, rest).to_le_bytes());
        v.extend_from_slice(rest);
        v
    };
    let mut bodies = BytesMut::new();
    if let Ok(event) = record::decode(seq, &value, &mut bodies) {
        let mut again = Vec::new();
        record::encode_into(seq, &event, &mut again);
        assert_eq!(again.len(), record::encoded_len(&event));
        let back = record::decode(seq, &again, &mut bodies).expect("re-encoded record decodes");
        assert_eq!(back.body, event.body);
        assert_eq!(
            back.headers.iter().collect::<Vec<_>>(),
            event.headers.iter().collect::<Vec<_>>()
        );
    }
});
