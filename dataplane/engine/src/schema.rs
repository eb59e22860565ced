//! JSON Schemas of the model's types that serialise by hand (as strings),
//! for the API's generated OpenAPI document. Every other type derives its
//! schema next to its serde derive.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use crate::geneve::HexBytes;
use crate::model::{Mac, Prefix};

impl JsonSchema for Mac {
    fn schema_name() -> Cow<'static, str> {
        "Mac".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A MAC address: six hexadecimal pairs separated by colons.",
            "pattern": "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$",
            "examples": ["02:00:00:00:00:01"]
        })
    }
}

impl JsonSchema for Prefix {
    fn schema_name() -> Cow<'static, str> {
        "Prefix".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An IPv4 or IPv6 address prefix (ADDRESS/LENGTH); a bare address is a full-length prefix.",
            "examples": ["198.51.100.0/24", "2001:db8::/32"]
        })
    }
}

impl JsonSchema for HexBytes {
    fn schema_name() -> Cow<'static, str> {
        "HexBytes".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Bytes as hexadecimal pairs, optionally prefixed 0x (a Geneve option's data: a multiple of 4 bytes).",
            "pattern": "^(0x)?([0-9a-fA-F]{2})*$",
            "examples": ["0000000b"]
        })
    }
}
