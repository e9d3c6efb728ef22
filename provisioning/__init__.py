"""HQ key material and node enrolment bundles (`mobile-office provision ...`)."""
