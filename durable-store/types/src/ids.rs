//! Identifiers and scalar values that appear in stored records: instance ids,
//! execution and task numbers, timestamps and JSON payloads.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest instance id accepted, in characters (as Durable Functions counts; up to
/// four bytes each in UTF-8).
pub const INSTANCE_ID_MAX_LEN: usize = 256;

/// The id of an orchestration instance: caller-chosen or generated, unique in a store.
///
/// An id is 1 to [`INSTANCE_ID_MAX_LEN`] characters that does not start with `@`
/// (reserved for entities) and contains none of `/ \ # ?` nor control characters, so
/// that it can appear unescaped in a URL path and in log lines. Cloning is cheap.
///
/// ```
/// use durable_types::InstanceId;
/// let id = InstanceId::new("order-42").unwrap();
/// assert_eq!(id.as_str(), "order-42");
/// assert!(InstanceId::new("a/b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(Arc<str>);

/// Why a string is not a valid [`InstanceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInstanceId {
    /// The id is the empty string.
    #[error("an instance id must not be empty")]
    Empty,
    /// The id is longer than [`INSTANCE_ID_MAX_LEN`] characters.
    #[error("instance id is {len} characters long; the limit is {INSTANCE_ID_MAX_LEN}")]
    TooLong {
        /// Length of the rejected id, in characters.
        len: usize,
    },
    /// The id starts with `@`, which is reserved for entity ids.
    #[error("instance id `{0}` starts with `@`, which is reserved for entities")]
    ReservedPrefix(String),
    /// The id contains a character that is not allowed.
    #[error(
        "instance id `{id}` contains {found:?}; `/`, `\\`, `#`, `?` and control characters are not allowed"
    )]
    BadCharacter {
        /// The rejected id.
        id: String,
        /// The first offending character.
        found: char,
    },
    /// The id is `.` or `..`: in a URL path those are dot segments, which every client
    /// removes, so the instance could not be addressed.
    #[error("`{0}` cannot be an id: URL clients remove `.` and `..` path segments")]
    DotSegment(String),
    /// An entity's name or key breaks a rule of ids, or the name holds `@`.
    #[error("the entity {part} {problem}")]
    InvalidEntityPart {
        /// `"name"` or `"key"`.
        part: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The longest entity name, and the longest entity key, in characters: together (as
/// `@name@key`) they fit in an instance id.
pub const ENTITY_PART_MAX_LEN: usize = (INSTANCE_ID_MAX_LEN - 2) / 2;

impl InstanceId {
    /// Validates `id` and wraps it.
    ///
    /// # Errors
    /// [`InvalidInstanceId`] says which rule the id breaks.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidInstanceId> {
        let id = id.as_ref();
        check_id_text(id)?;
        if id.starts_with('@') {
            return Err(InvalidInstanceId::ReservedPrefix(id.to_owned()));
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of entity `name`/`key`: `@name@key`. Only [`crate::EntityId`] builds these,
    /// from validated parts.
    pub(crate) fn entity(name: &str, key: &str) -> InstanceId {
        InstanceId(Arc::from(format!("@{name}@{key}")))
    }

    /// Whether this id addresses an entity (`@name@key`).
    pub fn is_entity(&self) -> bool {
        self.0.starts_with('@')
    }
}

/// The rules an instance id, an entity name and an entity key share: not empty, not too
/// long, not `.` or `..`, and no `/ \\ # ?` nor control characters (they appear in URL
/// paths).
pub(crate) fn check_id_text(id: &str) -> Result<(), InvalidInstanceId> {
    if id.is_empty() {
        return Err(InvalidInstanceId::Empty);
    }
    if id == "." || id == ".." {
        return Err(InvalidInstanceId::DotSegment(id.to_owned()));
    }
    let len = id.chars().count();
    if len > INSTANCE_ID_MAX_LEN {
        return Err(InvalidInstanceId::TooLong { len });
    }
    if let Some(found) = id
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '#' | '?') || c.is_control())
    {
        return Err(InvalidInstanceId::BadCharacter {
            id: id.to_owned(),
            found,
        });
    }
    Ok(())
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for InstanceId {
    type Err = InvalidInstanceId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for InstanceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        InstanceId::from_stored(&id).map_err(serde::de::Error::custom)
    }
}

impl InstanceId {
    /// Reads an id as stores keep it: a valid instance id, or an entity's `@name@key`.
    ///
    /// # Errors
    /// [`InvalidInstanceId`] when it is neither.
    pub fn from_stored(id: &str) -> Result<InstanceId, InvalidInstanceId> {
        if let Some((name, key)) = id.strip_prefix('@').and_then(|rest| rest.split_once('@')) {
            return EntityId::checked(name.to_owned(), key.to_owned())
                .map(|entity| entity.instance_id());
        }
        InstanceId::new(id)
    }
}

/// The id of a durable entity: its type's registered name and a key. Entities are
/// addressed like instances, as `@name@key` (which is why instance ids cannot start with
/// `@`).
///
/// ```
/// use durable_types::EntityId;
/// let id = EntityId::new("Counter", "myCounter").unwrap();
/// assert_eq!(id.instance_id().as_str(), "@counter@myCounter"); // names are case-insensitive
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "EntityIdParts")]
pub struct EntityId {
    name: String,
    key: String,
}

/// The wire form of an [`EntityId`], validated on the way in.
#[derive(Deserialize)]
struct EntityIdParts {
    name: String,
    key: String,
}

impl TryFrom<EntityIdParts> for EntityId {
    type Error = InvalidInstanceId;
    fn try_from(parts: EntityIdParts) -> Result<EntityId, InvalidInstanceId> {
        // As it was written (a name stored before names were lowercased stays as it is).
        EntityId::checked(parts.name, parts.key)
    }
}

impl EntityId {
    /// An entity id; the name and key follow the rules of instance ids (1 to
    /// [`ENTITY_PART_MAX_LEN`] characters each, not `.` or `..`, no `/ \ # ?` nor control
    /// characters), and the name cannot contain `@`. Names are
    /// case-insensitive, as in Durable Functions: the name is held lowercased (`Counter`
    /// and `counter` are one entity type); keys are case-sensitive.
    ///
    /// # Errors
    /// [`InvalidInstanceId`] saying which rule is broken.
    pub fn new(
        name: impl Into<String>,
        key: impl Into<String>,
    ) -> Result<EntityId, InvalidInstanceId> {
        EntityId::checked(name.into().to_lowercase(), key.into())
    }

    /// An entity id of exactly this name and key, validated.
    fn checked(name: String, key: String) -> Result<EntityId, InvalidInstanceId> {
        check_entity_part(&name, "name")?;
        check_entity_part(&key, "key")?;
        if name.contains('@') {
            return Err(InvalidInstanceId::InvalidEntityPart {
                part: "name",
                problem: format!("`{name}` contains '@', which separates the name from the key"),
            });
        }
        Ok(EntityId { name, key })
    }

    /// The entity's type name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entity's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The id under which the entity's messages travel: `@name@key`.
    pub fn instance_id(&self) -> InstanceId {
        InstanceId::entity(&self.name, &self.key)
    }

    /// The entity addressed by an instance id of the form `@name@key`, if it is one.
    pub fn from_instance_id(id: &InstanceId) -> Option<EntityId> {
        let rest = id.as_str().strip_prefix('@')?;
        let (name, key) = rest.split_once('@')?;
        Some(EntityId {
            name: name.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// The rules of ids, for one part of an entity id, with errors that name the part.
fn check_entity_part(text: &str, part: &'static str) -> Result<(), InvalidInstanceId> {
    let problem = match check_id_text(text) {
        Ok(()) => {
            let len = text.chars().count();
            if len <= ENTITY_PART_MAX_LEN {
                return Ok(());
            }
            format!("is {len} characters long; the limit is {ENTITY_PART_MAX_LEN}")
        }
        Err(InvalidInstanceId::Empty) => "must not be empty".to_owned(),
        Err(InvalidInstanceId::BadCharacter { found, .. }) => format!(
            "`{text}` contains {found:?}; `/`, `\\`, `#`, `?` and control characters are not allowed"
        ),
        Err(InvalidInstanceId::DotSegment(_)) => {
            format!("cannot be `{text}`: URL clients remove `.` and `..` path segments")
        }
        Err(other) => other.to_string(),
    };
    Err(InvalidInstanceId::InvalidEntityPart { part, problem })
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}@{}", self.name, self.key)
    }
}

/// The id of one execution of an instance: unique in its store and increasing — every
/// new execution (a start, `continue_as_new`, starting an ended or purged id again) gets a
/// number never used before, so a late result for an old execution can never be mistaken
/// for one of the current execution. Treat it as opaque.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ExecutionId(pub u64);

impl ExecutionId {
    /// The first execution id a store hands out.
    pub const FIRST: ExecutionId = ExecutionId(1);
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The sequence number of a durable task (activity, timer, sub-orchestration) within one
/// execution, assigned in the order the orchestrator creates them, starting at 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A point in time: milliseconds since the Unix epoch, UTC.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The earliest representable time, the Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The latest representable time.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// Converts a [`SystemTime`], saturating at the epoch and at [`Timestamp::MAX`].
    pub fn from_system_time(time: SystemTime) -> Timestamp {
        match time.duration_since(UNIX_EPOCH) {
            Ok(since) => Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
            Err(_) => Timestamp::EPOCH,
        }
    }

    /// This time as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `duration`, saturating at [`Timestamp::MAX`].
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Timestamp {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// The time from `earlier` to this time, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// A JSON document, kept as its text: inputs, outputs, event payloads and custom status
/// are stored as JSON inside records so tools can show them. Cloning is cheap.
///
/// A `Json` built by this crate's constructors is always well-formed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Json(Arc<str>);

impl Json {
    /// The JSON `null`.
    pub fn null() -> Json {
        Json(Arc::from("null"))
    }

    /// Serializes `value` to JSON.
    ///
    /// # Errors
    /// When `value`'s `Serialize` implementation fails (for example a map with non-string keys).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Json, serde_json::Error> {
        serde_json::to_string(value).map(|text| Json(Arc::from(text)))
    }

    /// Deserializes this document into `T`. Some clients encode a body twice (Durable
    /// Functions' Python client does, and Durable Functions takes it): a JSON string whose
    /// text is itself JSON. Such a string is decoded once more when `T` does not take it
    /// as it is (`T` is not a string), and always when its text is a JSON string (a string
    /// of a quoted string is never what was meant). Any other string stays the string it
    /// is.
    ///
    /// ```
    /// # use durable_types::Json;
    /// #[derive(serde::Deserialize)]
    /// struct Report { city: String }
    /// let twice = Json::parse(r#""{\"city\":\"Oslo\"}""#)?;
    /// assert_eq!(twice.decode::<Report>()?.city, "Oslo");
    /// assert_eq!(twice.decode::<String>()?, r#"{"city":"Oslo"}"#);
    /// let quoted = Json::parse(r#""\"laptop\"""#)?;
    /// assert_eq!(quoted.decode::<String>()?, "laptop");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    ///
    /// # Errors
    /// When the document does not have the shape `T` expects.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        let inner = || serde_json::from_str::<String>(&self.0).ok();
        // A string of a quoted string (`"\"laptop\""`): the quoted string, for any `T`.
        if self.0.trim_start().starts_with("\"\\\"")
            && let Some(text) = inner().filter(|text| serde_json::from_str::<String>(text).is_ok())
        {
            return serde_json::from_str(&text);
        }
        serde_json::from_str(&self.0).or_else(|error| match inner() {
            Some(text) => serde_json::from_str(&text).map_err(|_| error),
            None => Err(error),
        })
    }

    /// Checks that `text` is well-formed JSON and wraps it (an empty string is `null`).
    ///
    /// # Errors
    /// When `text` is not well-formed JSON.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        if text.trim().is_empty() {
            return Ok(Json::null());
        }
        serde_json::from_str::<serde::de::IgnoredAny>(text)?;
        Ok(Json(Arc::from(text)))
    }

    /// The document's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The size of the document's text, in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never true for a `Json` built by this crate).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({})", &*self.0)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Json(Arc::from(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_rules() {
        assert!(InstanceId::new("abc-123_x.y:z").is_ok());
        assert_eq!(InstanceId::new(""), Err(InvalidInstanceId::Empty));
        assert!(matches!(
            InstanceId::new("x".repeat(257)),
            Err(InvalidInstanceId::TooLong { len: 257 })
        ));
        assert!(InstanceId::new("x".repeat(256)).is_ok());
        assert!(matches!(
            InstanceId::new("@counter@a"),
            Err(InvalidInstanceId::ReservedPrefix(_))
        ));
        for dots in [".", ".."] {
            assert_eq!(
                InstanceId::new(dots),
                Err(InvalidInstanceId::DotSegment(dots.to_owned()))
            );
            assert!(EntityId::new("counter", dots).is_err());
            assert!(EntityId::new(dots, "k").is_err());
        }
        assert!(InstanceId::new("...").is_ok());
        assert!(InstanceId::new(".a").is_ok());
        for bad in ["a/b", "a\\b", "a#b", "a?b", "a\nb", "a\u{0}b", "a\u{85}b"] {
            assert!(
                matches!(
                    InstanceId::new(bad),
                    Err(InvalidInstanceId::BadCharacter { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn json_parse_and_roundtrip() {
        assert_eq!(Json::parse("").unwrap(), Json::null());
        assert!(Json::parse("{\"a\":").is_err());
        let json = Json::encode(&vec![1, 2, 3]).unwrap();
        assert_eq!(json.decode::<Vec<u32>>().unwrap(), vec![1, 2, 3]);
        assert!(json.decode::<String>().is_err());
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(
            Timestamp::MAX.saturating_add(Duration::from_secs(1)),
            Timestamp::MAX
        );
        assert_eq!(
            Timestamp(5).saturating_duration_since(Timestamp(9)),
            Duration::ZERO
        );
        let now = SystemTime::now();
        let ts = Timestamp::from_system_time(now);
        assert!(ts.to_system_time() <= now);
    }
}
