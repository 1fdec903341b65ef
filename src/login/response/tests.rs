//! Tests of `response`.

use super::*;

const SECRET: &str = "s3cr3t-value";

fn ok(body: &str) -> Result<TokenResponse, Error> {
    parse_response(StatusCode::OK, None, body.as_bytes(), &[SECRET])
}

fn invalid_reason(body: &str) -> String {
    match ok(body) {
        Err(Error::InvalidResponse { reason, .. }) => reason,
        other => panic!("expected InvalidResponse for {body:?}, got {other:?}"),
    }
}

#[test]
fn parses_a_good_answer() {
    let t = ok(r#"{"access_token":"eyJ.a.b","token_type":"Bearer","expires_in":3600,"scope":"InvoicingAPI"}"#)
        .unwrap();
    assert_eq!(t.access_token, "eyJ.a.b");
    assert_eq!(t.header, "Bearer eyJ.a.b");
    assert!(t.header.is_sensitive());
    assert_eq!(t.lifetime, Duration::from_secs(3600));
    assert_eq!(t.scope.as_deref(), Some("InvoicingAPI"));
    let t = ok(r#"{"access_token":"x","token_type":"bearer","expires_in":1}"#).unwrap();
    assert_eq!(t.scope, None);
}

#[test]
fn expires_in_may_be_an_integral_float_or_a_numeric_string() {
    for (value, secs) in [
        ("3600", 3600),
        ("3600.0", 3600),
        (r#""3600""#, 3600),
        (r#"" 3600 ""#, 3600),
        (r#""3600.0""#, 3600),
        ("1e3", 1000),
    ] {
        let body = format!(r#"{{"access_token":"t","token_type":"Bearer","expires_in":{value}}}"#);
        assert_eq!(
            ok(&body).unwrap().lifetime,
            Duration::from_secs(secs),
            "{value}"
        );
    }
}

#[test]
fn token_type_is_compared_case_insensitively() {
    for t in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let body = format!(r#"{{"access_token":"t","token_type":"{t}","expires_in":60}}"#);
        assert!(ok(&body).is_ok(), "{t}");
    }
}

#[test]
fn every_malformed_answer_is_a_typed_error() {
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        ("<html>oops</html>", "not JSON"),
        ("[1,2]", "not a JSON object"),
        (
            r#"{"token_type":"Bearer","expires_in":3600}"#,
            "access_token is missing",
        ),
        (
            r#"{"access_token":"","token_type":"Bearer","expires_in":3600}"#,
            "empty",
        ),
        (
            r#"{"access_token":7,"token_type":"Bearer","expires_in":3600}"#,
            "not a string",
        ),
        (
            r#"{"access_token":"a b","token_type":"Bearer","expires_in":3600}"#,
            "header",
        ),
        (
            r#"{"access_token":"a\nb","token_type":"Bearer","expires_in":3600}"#,
            "header",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer"}"#,
            "expires_in is missing",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":0}"#,
            "zero",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":-5}"#,
            "negative",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":"-5"}"#,
            "negative",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":"soon"}"#,
            "not a number",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":"NaN"}"#,
            "finite",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":true}"#,
            "not a number",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":1.5}"#,
            "whole number",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":99999999999999}"#,
            "larger",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":1e300}"#,
            "larger",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":1e400}"#,
            "not JSON",
        ),
        (
            r#"{"access_token":"t","token_type":"MAC","expires_in":3600}"#,
            "not Bearer (a 3-character value)",
        ),
        (
            r#"{"access_token":"t","expires_in":3600}"#,
            "token_type is missing",
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer","expires_in":3600,"scope":1}"#,
            "scope",
        ),
    ];
    for (body, expect) in cases {
        let reason = invalid_reason(body);
        assert!(
            reason.contains(expect),
            "{body:?}: {reason:?} lacks {expect:?}"
        );
    }
}

#[test]
fn errors_never_quote_the_token() {
    for body in [
        r#"{"access_token":"TOPSECRETTOKEN","token_type":"MAC","expires_in":3600}"#,
        r#"{"access_token":"TOPSECRETTOKEN","token_type":"TOPSECRETTOKEN","expires_in":3600}"#,
        r#"{"access_token":"TOPSECRETTOKEN","token_type":"Bearer","expires_in":"TOPSECRETTOKEN"}"#,
        r#"{"access_token":"TOPSECRETTOKEN\u0000","token_type":"Bearer","expires_in":3600}"#,
    ] {
        let err = ok(body).unwrap_err();
        assert!(
            !format!("{err} {err:?}").contains("TOPSECRETTOKEN"),
            "{err:?}"
        );
    }
    // In an error answer, a token is scrubbed from the description.
    let err = parse_response(
        StatusCode::BAD_REQUEST,
        None,
        br#"{"error":"invalid_grant","error_description":"old TOPSECRETTOKEN","access_token":"TOPSECRETTOKEN"}"#,
        &[SECRET],
    )
    .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("TOPSECRETTOKEN"));
}

#[test]
fn oauth_errors_are_parsed_from_400_and_401_and_scrubbed() {
    for status in [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED] {
        let body = format!(
            r#"{{"error":"unauthorised_client","error_description":"User blocked {SECRET}","error_uri":"https://u:p@x.example/doc?k={SECRET}#f"}}"#
        );
        let err = parse_response(status, None, body.as_bytes(), &[SECRET]).unwrap_err();
        match err {
            Error::OAuth {
                status: s,
                code,
                description,
                uri,
                retry_after,
            } => {
                assert_eq!(s, status.as_u16());
                assert_eq!(code, OAuthErrorCode::UnauthorizedClient);
                assert_eq!(description.as_deref(), Some("User blocked <redacted>"));
                assert_eq!(uri.as_deref(), Some("https://x.example/doc"));
                assert_eq!(retry_after, None);
            }
            other => panic!("{other:?}"),
        }
    }
    let err = parse_response(StatusCode::BAD_REQUEST, None, b"<html/>", &["s"]).unwrap_err();
    assert!(
        matches!(err, Error::IdentityService { status: 400, .. }),
        "{err:?}"
    );
}

#[test]
fn an_error_uri_is_scrubbed_before_parsing_changes_it() {
    let secret = "MiXeD Secret";
    for uri in [
        format!("https://{}.x.example/doc", "MiXeDSecret"),
        format!("https://x.example/{secret}/doc"),
    ] {
        let body = serde_json::json!({"error": "invalid_client", "error_uri": uri});
        let err = parse_response(
            StatusCode::BAD_REQUEST,
            None,
            body.to_string().as_bytes(),
            &[secret, "MiXeDSecret"],
        )
        .unwrap_err();
        let text = format!("{err} {err:?}").to_lowercase();
        assert!(
            !text.contains("mixedsecret") && !text.contains("mixed%20secret"),
            "{text}"
        );
    }
}

#[test]
fn a_secret_straddling_the_cut_leaves_nothing_behind() {
    let description = format!("{}{SECRET}", "x".repeat(MAX_TEXT - 4));
    let body = serde_json::json!({"error": "invalid_client", "error_description": description});
    let err = parse_response(
        StatusCode::BAD_REQUEST,
        None,
        body.to_string().as_bytes(),
        &[SECRET],
    )
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(&SECRET[..4]), "{text}");
}

#[test]
fn other_statuses_are_identity_service_errors_and_429_is_rate_limited() {
    let err = parse_response(StatusCode::BAD_GATEWAY, None, b"", &["s"]).unwrap_err();
    assert!(matches!(err, Error::IdentityService { status: 502, .. }));
    let err = parse_response(
        StatusCode::TOO_MANY_REQUESTS,
        Some(Duration::from_secs(30)),
        b"",
        &["s"],
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(30))
    );
}

#[test]
fn retry_after_reads_seconds_and_all_three_http_date_forms() {
    let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:27:00 GMT").unwrap();
    let v = |s: &str| HeaderValue::from_str(s).unwrap();
    let minute = Some(Duration::from_secs(60));
    assert_eq!(
        parse_retry_after(&v("30"), now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after(&v("Wed, 21 Oct 2015 07:28:00 GMT"), now),
        minute
    );
    assert_eq!(
        parse_retry_after(&v("Wednesday, 21-Oct-15 07:28:00 GMT"), now),
        minute
    );
    assert_eq!(
        parse_retry_after(&v("Wed Oct 21 07:28:00 2015"), now),
        minute
    );
    assert_eq!(
        parse_retry_after(&v("Wed, 21 Oct 2015 07:00:00 GMT"), now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after(&v("soon"), now), None);
    assert_eq!(parse_retry_after(&v("-1"), now), None);
    assert_eq!(parse_retry_after(&v(""), now), None);
}

#[test]
fn absurd_retry_afters_are_capped_not_overflowed() {
    let now = SystemTime::now();
    let v = |s: &str| HeaderValue::from_str(s).unwrap();
    for huge in [
        "18446744073709551615",
        "99999999999999999999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        assert_eq!(
            parse_retry_after(&v(huge), now),
            Some(MAX_RETRY_AFTER),
            "{huge}"
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "TOKENVALUEx9";

    /// Strings that may carry the secret or the token: as they are,
    /// inside other text, or straddling the point where text is cut.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,40}",
            Just(SECRET.to_owned()),
            Just(TOKEN.to_owned()),
            (".{0,20}", ".{0,20}").prop_map(|(a, b)| format!("{a}{SECRET}{b}")),
            (".{0,20}", ".{0,20}").prop_map(|(a, b)| format!("{a}{TOKEN}{b}")),
            (0usize..20).prop_map(|n| format!("{}{SECRET}", "x".repeat(MAX_TEXT - n))),
            (0usize..20).prop_map(|n| format!("{}{TOKEN}", "é".repeat(MAX_TEXT - n))),
            Just("Bearer".to_owned()),
            "[0-9]{1,6}(\\.0)?",
        ]
    }

    /// Any JSON value, strings drawn from [`text`].
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{1,12}", inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// A token answer's shape: each known field absent, a string
    /// (mostly) or any value; sometimes not an object at all.
    fn answer() -> impl Strategy<Value = Value> {
        let field = || {
            prop_oneof![
                2 => Just(None),
                3 => text().prop_map(|t| Some(Value::String(t))),
                1 => json().prop_map(Some),
            ]
        };
        let object = (
            [field(), field(), field(), field(), field(), field()],
            prop::collection::vec(("[a-z_]{1,12}", json()), 0..3),
        )
            .prop_map(|(known, extra)| {
                let names = [
                    "token_type",
                    "expires_in",
                    "scope",
                    "error",
                    "error_description",
                    "error_uri",
                ];
                let mut object: serde_json::Map<String, Value> = extra.into_iter().collect();
                for (name, value) in names.into_iter().zip(known) {
                    if let Some(value) = value {
                        object.insert(name.to_owned(), value);
                    }
                }
                Value::Object(object)
            });
        prop_oneof![9 => object, 1 => json()]
    }

    fn status() -> impl Strategy<Value = StatusCode> {
        prop_oneof![
            Just(StatusCode::OK),
            Just(StatusCode::BAD_REQUEST),
            Just(StatusCode::UNAUTHORIZED),
            Just(StatusCode::TOO_MANY_REQUESTS),
            (100u16..600).prop_map(|s| StatusCode::from_u16(s).unwrap()),
        ]
    }

    /// No error text shows the secret, nor the answer's token when it
    /// carries one, nor their first characters (what a cut through
    /// them would leave).
    fn assert_clean(result: &Result<TokenResponse, Error>, carries_token: bool) {
        if let Err(err) = result {
            let shown = format!("{err} {err:?} {:?}", err.retry_after());
            assert!(!shown.contains(&SECRET[..4]), "the secret shows: {shown}");
            assert!(
                !(carries_token && shown.contains(&TOKEN[..4])),
                "the token shows: {shown}"
            );
        }
    }

    /// The text in a result that came from the identity service: what
    /// a value to hide could reach.
    fn server_texts(result: &Result<TokenResponse, Error>) -> Vec<String> {
        match result {
            Ok(token) => token.scope.iter().cloned().collect(),
            Err(Error::OAuth {
                code,
                description,
                uri,
                ..
            }) => [
                Some(code.as_str().to_owned()),
                description.clone(),
                uri.clone(),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Values to hide that the fixed ones above never try: one to a few
    /// characters, pieces of the marker that replaces them, control
    /// characters.
    fn short_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z<>*#]{1,3}",
            (0usize..10, 1usize..4).prop_map(|(at, n)| {
                let m = crate::redact::REDACTED;
                m[at.min(m.len() - 1)..(at + n).min(m.len())].to_owned()
            }),
            ".{1,6}",
            "[a-z]{1,2}[\\r\\n ]{1,2}[a-z]{1,2}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn short_or_marker_like_values_never_hang_nor_show(
            status in prop_oneof![Just(StatusCode::OK), Just(StatusCode::BAD_REQUEST)],
            secret in short_value(),
            token in short_value(),
            texts in prop::collection::vec((".{0,12}", 0usize..3), 1..4),
        ) {
            // Each server text field mixes the values with other text.
            let mix = |i: usize| -> String {
                let (other, pick) = &texts[i % texts.len()];
                match pick {
                    0 => format!("{other}{secret}{other}"),
                    1 => format!("{token}{other}{token}"),
                    _ => format!("{secret}{token}{other}"),
                }
            };
            let body = serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": mix(0),
                "error": mix(1),
                "error_description": mix(2),
                "error_uri": format!("https://x.example/{}", mix(3)),
            });
            let result = parse_response(status, None, body.to_string().as_bytes(), &[&secret]);
            for text in server_texts(&result) {
                prop_assert!(!text.contains(secret.as_str()), "secret {secret:?} in {text:?}");
                prop_assert!(!text.contains(token.as_str()), "token {token:?} in {text:?}");
                prop_assert!(!text.chars().any(char::is_control), "{text:?}");
                prop_assert!(text.chars().count() <= MAX_TEXT + 1, "{text:?}");
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_nor_leak(
            status in status(),
            body in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            assert_clean(&parse_response(status, None, &body, &[SECRET]), false);
        }

        #[test]
        fn arbitrary_json_never_panics_nor_leaks(
            status in status(),
            mut value in answer(),
            with_token in any::<bool>(),
        ) {
            // When the answer carries the token, whatever else is wrong
            // with it, no error may quote it.
            let mut carries_token = false;
            if let (Value::Object(object), true) = (&mut value, with_token) {
                object.insert("access_token".into(), Value::String(TOKEN.into()));
                carries_token = true;
            }
            let body = serde_json::to_vec(&value).unwrap();
            let result = parse_response(status, Some(Duration::from_secs(1)), &body, &[SECRET]);
            assert_clean(&result, carries_token);
            if let Ok(token) = result {
                // The scope is shown by the token's Debug.
                let shown = format!("{token:?}");
                prop_assert!(!shown.contains(&SECRET[..4]), "{shown}");
                prop_assert!(!shown.contains(&TOKEN[..4]), "{shown}");
                prop_assert!(token.lifetime > Duration::ZERO && token.lifetime <= MAX_TOKEN_LIFETIME);
                prop_assert!(!token.access_token.is_empty());
            }
        }

        #[test]
        fn any_retry_after_is_bounded(raw in prop::collection::vec(any::<u8>(), 0..64), digits in "[0-9]{1,40}") {
            for bytes in [raw.as_slice(), digits.as_bytes()] {
                if let Ok(value) = HeaderValue::from_bytes(bytes) {
                    if let Some(wait) = parse_retry_after(&value, SystemTime::now()) {
                        prop_assert!(wait <= MAX_RETRY_AFTER);
                    }
                }
            }
        }
    }
}
