//! The methods the reports compare, by name: the teacher and the baselines, and PIDDM's own rows.

use serde::{Deserialize, Serialize};

/// A generator or solver in a report, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// The EDM teacher, Heun's probability-flow ODE.
    #[serde(rename = "teacher")]
    Teacher,
    /// The teacher continued with a residual term on its clean estimate (Bastek et al. 2025).
    #[serde(rename = "pidm")]
    Pidm,
    /// Gradient guidance through the denoiser (Huang et al. 2024).
    #[serde(rename = "diffusionpde")]
    DiffusionPde,
    /// Correction and re-noising (Cheng et al. 2024).
    #[serde(rename = "eci")]
    Eci,
    /// The one-step student distilled without the residual term.
    #[serde(rename = "student_lambda0")]
    StudentLambda0,
    /// The PIDDM student, one step.
    #[serde(rename = "piddm_1")]
    Piddm1,
    /// The PIDDM student with a few steps lowering its residual.
    #[serde(rename = "piddm_ref")]
    PiddmRef,
    /// The exported model through the runtime (`--model`): its one-step samples, and its
    /// amortised encoder's one-call answer (corrections and settling included).
    #[serde(rename = "piddm_one_call")]
    ShippedOneCall,
    /// The exported model's answer with its card's solve defaults.
    #[serde(rename = "piddm_card")]
    ShippedCard,
}

impl Method {
    pub const ALL: [Method; 9] = [
        Method::Teacher,
        Method::Pidm,
        Method::DiffusionPde,
        Method::Eci,
        Method::StudentLambda0,
        Method::Piddm1,
        Method::PiddmRef,
        Method::ShippedOneCall,
        Method::ShippedCard,
    ];

    /// The name in reports, JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Teacher => "teacher",
            Method::Pidm => "pidm",
            Method::DiffusionPde => "diffusionpde",
            Method::Eci => "eci",
            Method::StudentLambda0 => "student_lambda0",
            Method::Piddm1 => "piddm_1",
            Method::PiddmRef => "piddm_ref",
            Method::ShippedOneCall => "piddm_one_call",
            Method::ShippedCard => "piddm_card",
        }
    }

    /// The rows PIDDM's goal is measured against (the others are its own variants).
    pub fn is_baseline(self) -> bool {
        matches!(
            self,
            Method::Teacher | Method::Pidm | Method::DiffusionPde | Method::Eci
        )
    }

    /// Whether the row runs an exported model through the runtime.
    pub fn is_shipped(self) -> bool {
        matches!(self, Method::ShippedOneCall | Method::ShippedCard)
    }

    /// Whether the row needs the students' checkpoints.
    pub fn needs_students(self) -> bool {
        matches!(
            self,
            Method::StudentLambda0 | Method::Piddm1 | Method::PiddmRef
        )
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                anyhow::anyhow!("unknown method '{s}' (known: {})", known.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
            assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
        }
        let e = "nonsense".parse::<Method>().unwrap_err().to_string();
        assert!(
            e.contains("unknown method 'nonsense'") && e.contains("piddm_ref"),
            "{e}"
        );
        assert_eq!(Method::ALL.iter().filter(|m| m.is_baseline()).count(), 4);
    }
}
