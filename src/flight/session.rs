//! Flight session options (`SetSessionOptions`, `GetSessionOptions`,
//! `CloseSession`). arrow-flight 60 does not ship these messages, so they are
//! declared here exactly as in Flight.proto.

use std::collections::HashMap;

use crate::engine::OptionValue;

/// Cookie that carries the session id (the name Flight SQL clients use).
pub const SESSION_COOKIE: &str = "arrow_flight_session_id";

#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionOptionValue {
    #[prost(oneof = "session_option_value::OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<session_option_value::OptionValue>,
}

pub mod session_option_value {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringListValue {
        #[prost(string, repeated, tag = "1")]
        pub values: Vec<String>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum OptionValue {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(sfixed64, tag = "3")]
        Int64Value(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        StringListValue(StringListValue),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetSessionOptionsError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsError {
    /// 0 unspecified, 1 invalid name, 2 invalid value, 3 error.
    #[prost(int32, tag = "1")]
    pub value: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseSessionRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseSessionResult {
    /// 0 unspecified, 1 closed, 2 closing, 3 not closeable.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

pub fn from_wire(v: SessionOptionValue) -> Option<OptionValue> {
    use session_option_value::OptionValue as W;
    Some(match v.option_value? {
        W::StringValue(s) => OptionValue::String(s),
        W::BoolValue(b) => OptionValue::Bool(b),
        W::Int64Value(i) => OptionValue::Int(i),
        W::DoubleValue(d) => OptionValue::Double(d),
        W::StringListValue(l) => OptionValue::StringList(l.values),
    })
}

pub fn to_wire(v: OptionValue) -> SessionOptionValue {
    use session_option_value::OptionValue as W;
    let w = match v {
        OptionValue::String(s) => W::StringValue(s),
        OptionValue::Bool(b) => W::BoolValue(b),
        OptionValue::Int(i) => W::Int64Value(i),
        OptionValue::Double(d) => W::DoubleValue(d),
        OptionValue::StringList(values) => {
            W::StringListValue(session_option_value::StringListValue { values })
        }
    };
    SessionOptionValue {
        option_value: Some(w),
    }
}

/// The session id from a `cookie` header value.
pub fn session_from_cookie(cookie: &str) -> Option<String> {
    cookie.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == SESSION_COOKIE && !v.is_empty()).then(|| v.to_string())
    })
}
