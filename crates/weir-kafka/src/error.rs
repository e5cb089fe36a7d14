//! rdkafka errors → weir's `Error`, with secrets removed.
//!
//! weir-kafka's errors are weir-core's [`Error`]: the `Consumer` trait returns it, and a
//! job that switches backends handles the same variants. Broker and client failures
//! that have no better variant become [`Error::Backend`] with `backend = "kafka"`.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use weir_core::Error;

use crate::config::Redactor;

/// Whether trying again may succeed.
pub(crate) fn code_is_retriable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::OperationTimedOut
            | C::TimedOutQueue
            | C::RequestTimedOut
            | C::CoordinatorLoadInProgress
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::Resolve
    )
}

/// Turn an rdkafka error into weir's, saying what was being done. Messages never carry
/// configuration values: rust-rdkafka's `ClientConfig` errors include the offending
/// value, so only the key and librdkafka's description (redacted) are kept.
pub(crate) fn from_kafka(what: &str, err: &KafkaError, redactor: &Redactor) -> Error {
    match err {
        KafkaError::ClientConfig(_, description, key, _value) => Error::config(
            key.as_str(),
            redactor.clean(&format!("librdkafka rejected it: {description}")),
        ),
        KafkaError::ClientCreation(msg) => Error::Backend {
            backend: "kafka",
            message: redactor.clean(&format!("{what}: cannot create the client: {msg}")),
            retriable: false,
        },
        other => {
            let code = other.rdkafka_error_code();
            let message = match code {
                Some(c) => format!("{what}: {c}"),
                None => redactor.clean(&format!("{what}: {other}")),
            };
            Error::Backend {
                backend: "kafka",
                message,
                retriable: code.is_some_and(code_is_retriable),
            }
        }
    }
}

/// An error code reported by librdkafka (commit results, partition errors).
pub(crate) fn from_code(what: &str, code: RDKafkaErrorCode) -> Error {
    Error::Backend {
        backend: "kafka",
        message: format!("{what}: {code}"),
        retriable: code_is_retriable(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaConfRes;
    use weir_core::ConsumerConfig;

    #[test]
    fn config_errors_name_the_key_but_never_the_value() {
        let c = ConsumerConfig::from_properties([("sasl.password", "canary-77")]).unwrap();
        let r = Redactor::new(&c);
        let e = from_kafka(
            "creating the consumer",
            &KafkaError::ClientConfig(
                RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                "Invalid value \"canary-77\" for property".into(),
                "sasl.password".into(),
                "canary-77".into(),
            ),
            &r,
        );
        let text = format!("{e} {e:?}");
        assert!(text.contains("sasl.password"), "{text}");
        assert!(!text.contains("canary-77"), "{text}");
    }

    #[test]
    fn retriable_codes() {
        let e = from_code("committing", RDKafkaErrorCode::CoordinatorNotAvailable);
        assert!(e.is_retriable());
        let e = from_code("committing", RDKafkaErrorCode::UnknownMemberId);
        assert!(!e.is_retriable());
        assert!(e.to_string().contains("committing"));
    }
}
