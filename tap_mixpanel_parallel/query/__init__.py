"""The Query, Engage and App API streams (people profiles, cohorts, annotations, funnels)."""
