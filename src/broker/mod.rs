//! Shared broker state: the session registry, the routes, retained messages and wills.
