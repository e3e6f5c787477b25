//! Signed, opaque pagination cursors.
//!
//! A cursor is `base64url(position JSON) "." base64url(HMAC-SHA256 tag)`. The tag covers the
//! payload *and* the [`CursorBinding`], which is not itself carried in the cursor: a cursor
//! replayed in another environment, account, resource or filter set fails verification the
//! same way a tampered one does, without revealing anything about why.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::CursorError;

type HmacSha256 = Hmac<Sha256>;

/// Longest cursor accepted; bounds the work done on hostile input while leaving room for
/// merged-list positions with a few hundred sources.
pub const MAX_CURSOR_LEN: usize = 64 * 1024;

/// Domain separation, so a tag made for something else with the same key never verifies.
const CONTEXT: &[u8] = b"cigate-cursor-v1";

/// What a cursor is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorBinding {
    pub environment_id: String,
    pub account_id: String,
    pub resource: String,
    /// Canonical string of scope, filters and limit (see [`crate::ListQuery::canonical`]).
    pub filters: String,
}

/// Encodes and verifies cursors with one server key.
#[derive(Clone)]
pub struct CursorCodec {
    mac: HmacSha256,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec([redacted])")
    }
}

impl CursorCodec {
    /// `key` should be at least 32 random bytes. Any length is accepted, as HMAC allows.
    pub fn new(key: &[u8]) -> CursorCodec {
        // HMAC's own key preparation (hash when longer than a block, zero-pad), done here so
        // construction cannot fail.
        let mut block = [0u8; 64];
        if key.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        CursorCodec {
            mac: <HmacSha256 as KeyInit>::new(&block.into()),
        }
    }

    fn tag(&self, binding: &CursorBinding, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(CONTEXT);
        for part in [
            binding.environment_id.as_bytes(),
            binding.account_id.as_bytes(),
            binding.resource.as_bytes(),
            binding.filters.as_bytes(),
            payload,
        ] {
            // Length-prefixed, so ("ab","c") and ("a","bc") never collide.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    pub fn encode(&self, binding: &CursorBinding, position: &serde_json::Value) -> String {
        let payload = position.to_string();
        let tag = self
            .tag(binding, payload.as_bytes())
            .finalize()
            .into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Verifies and opens a cursor. Never panics, whatever the input.
    pub fn decode(
        &self,
        binding: &CursorBinding,
        cursor: &str,
    ) -> Result<serde_json::Value, CursorError> {
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong);
        }
        let (payload, tag) = cursor.split_once('.').ok_or(CursorError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CursorError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CursorError::Malformed)?;
        // Constant-time comparison.
        self.tag(binding, &payload)
            .verify_slice(&tag)
            .map_err(|_| CursorError::BadSignature)?;
        serde_json::from_slice(&payload).map_err(|_| CursorError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn binding() -> CursorBinding {
        CursorBinding {
            environment_id: "env_1".into(),
            account_id: "acc_1".into(),
            resource: "jobs".into(),
            filters: r#"["acme",null,null,37]"#.into(),
        }
    }

    fn codec() -> CursorCodec {
        CursorCodec::new(b"0123456789abcdef0123456789abcdef")
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn cursor_is_url_safe() {
        let c = codec().encode(&binding(), &json!({"page": 2, "s": "a/b+c?"}));
        assert!(c
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)));
    }

    #[test]
    fn foreign_bindings_are_refused() {
        let codec = codec();
        let c = codec.encode(&binding(), &json!({"page": 2}));
        assert_eq!(codec.decode(&binding(), &c), Ok(json!({"page": 2})));
        let others = [
            CursorBinding {
                environment_id: "env_2".into(),
                ..binding()
            },
            CursorBinding {
                account_id: "acc_2".into(),
                ..binding()
            },
            CursorBinding {
                resource: "workflow".into(),
                ..binding()
            },
            CursorBinding {
                filters: r#"["acme",null,null,38]"#.into(),
                ..binding()
            },
        ];
        for other in others {
            assert_eq!(codec.decode(&other, &c), Err(CursorError::BadSignature));
        }
        let other_key = CursorCodec::new(b"another key");
        assert_eq!(
            other_key.decode(&binding(), &c),
            Err(CursorError::BadSignature)
        );
    }

    #[test]
    fn long_keys_work() {
        let codec = CursorCodec::new(&[7u8; 200]);
        let c = codec.encode(&binding(), &json!(1));
        assert_eq!(codec.decode(&binding(), &c), Ok(json!(1)));
    }

    #[test]
    fn numbers_open_as_they_were_signed() {
        let codec = codec();
        // An integer beyond 64 bits is read as the nearest float; the cursor must carry
        // that float back exactly (it did not before serde_json's exact float parsing).
        let huge: Value = serde_json::from_str(&"6".repeat(107)).unwrap();
        for position in [huge, json!(0.1), json!(-1.5e-300), json!(f64::MAX)] {
            let c = codec.encode(&binding(), &position);
            assert_eq!(codec.decode(&binding(), &c), Ok(position));
        }
    }

    #[test]
    fn oversized_is_refused() {
        let big = "a".repeat(MAX_CURSOR_LEN + 1);
        assert_eq!(codec().decode(&binding(), &big), Err(CursorError::TooLong));
    }

    proptest! {
        #[test]
        fn round_trip(position in arb_json()) {
            let codec = codec();
            let c = codec.encode(&binding(), &position);
            prop_assert_eq!(codec.decode(&binding(), &c), Ok(position));
        }

        #[test]
        fn any_single_byte_change_is_refused(position in arb_json(), index in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let codec = codec();
            let c = codec.encode(&binding(), &position).into_bytes();
            let i = index.index(c.len());
            prop_assume!(c[i] != byte);
            let mut tampered = c.clone();
            tampered[i] = byte;
            // Non-UTF-8 cannot even reach decode as a &str; the rest must fail.
            if let Ok(s) = String::from_utf8(tampered) {
                prop_assert!(codec.decode(&binding(), &s).is_err());
            }
        }

        #[test]
        fn truncation_is_refused(position in arb_json(), index in any::<prop::sample::Index>()) {
            let codec = codec();
            let c = codec.encode(&binding(), &position);
            let cut = index.index(c.len());
            prop_assert!(codec.decode(&binding(), &c[..cut]).is_err());
        }

        #[test]
        fn garbage_never_panics(s in ".*") {
            let _ = codec().decode(&binding(), &s);
        }

        #[test]
        fn dotted_garbage_never_panics(a in "[A-Za-z0-9_-]{0,64}", b in "[A-Za-z0-9_-]{0,64}") {
            let _ = codec().decode(&binding(), &format!("{a}.{b}"));
        }
    }
}
