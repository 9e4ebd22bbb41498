//! Reading the messages a stream stores, one by one, through the stream's own message-get
//! API: nothing is left behind on the server (no consumer, no acks), deleted messages are
//! skipped by the server, and the walk stops at the last message present when it began.

use async_nats::HeaderMap;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::Error;

/// One stored message, with its headers as `(name, value)` pairs sorted by name (a header
/// with several values gives several pairs, in their order).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub sequence: u64,
    pub time: DateTime<Utc>,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl From<StreamMessage> for Stored {
    fn from(message: StreamMessage) -> Self {
        let time =
            DateTime::from_timestamp(message.time.unix_timestamp(), message.time.nanosecond())
                .unwrap_or(DateTime::UNIX_EPOCH);
        Stored {
            sequence: message.sequence,
            time,
            subject: message.subject.to_string(),
            headers: header_pairs(&message.headers),
            payload: message.payload,
        }
    }
}

/// A header map as `(name, value)` pairs sorted by name, so that output is stable (the map
/// itself has no order).
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect();
    // Stable: the values of one header keep their order.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

/// The stream, or `None` if nobody has created it (yet).
pub(crate) async fn find_stream(
    jetstream: &jetstream::Context,
    name: &str,
) -> Result<Option<Stream>, Error> {
    match jetstream.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(error) => match error.kind() {
            GetStreamErrorKind::JetStream(inner)
                if inner.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(Error::Stream {
                stream: name.to_owned(),
                source: error,
            }),
        },
    }
}

/// Walks a stream's messages in sequence order, from its first message to the last one it
/// held when the reader was made: what arrives meanwhile is left for the next command, so
/// that redriving "all" cannot chase letters that its own redrives cause.
pub(crate) struct Reader<'a> {
    stream: &'a Stream,
    /// The subjects to read (wildcards allowed): the server skips the others.
    subjects: String,
    next: u64,
    last: u64,
}

impl<'a> Reader<'a> {
    pub fn new(stream: &'a Stream) -> Reader<'a> {
        Reader::of_subjects(stream, ">")
    }

    /// A reader of the messages on `subjects` only, e.g. `order.*.<order id>`.
    pub fn of_subjects(stream: &'a Stream, subjects: &str) -> Reader<'a> {
        let state = &stream.cached_info().state;
        Reader {
            stream,
            subjects: subjects.to_owned(),
            next: state.first_sequence.max(1),
            last: state.last_sequence,
        }
    }

    /// The next stored message, or `None` past the last one.
    pub async fn next(&mut self) -> Result<Option<Stored>, Error> {
        if self.next > self.last {
            return Ok(None);
        }
        // The first message at or after `next` on the subjects: the server skips deleted ones
        // and other subjects.
        match self
            .stream
            .get_first_raw_message_by_subject(self.subjects.as_str(), self.next)
            .await
        {
            Ok(message) if message.sequence <= self.last => {
                self.next = message.sequence + 1;
                Ok(Some(message.into()))
            }
            Ok(_) => Ok(None),
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(source) => Err(Error::Read {
                stream: self.stream.cached_info().config.name.clone(),
                sequence: self.next,
                source,
            }),
        }
    }
}

/// One message by its sequence, or `None` if the stream holds none with it.
pub(crate) async fn get(stream: &Stream, sequence: u64) -> Result<Option<Stored>, Error> {
    match stream.get_raw_message(sequence).await {
        Ok(message) => Ok(Some(message.into())),
        Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(source) => Err(Error::Read {
            stream: stream.cached_info().config.name.clone(),
            sequence,
            source,
        }),
    }
}
