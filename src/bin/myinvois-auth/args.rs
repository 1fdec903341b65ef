//! The command line: subcommands and flags. Every setting is also an
//! environment variable; the client secret is only that (or a file).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES;

/// MyInvois access tokens for any program on this host, within the login
/// limit: repeated calls reuse one token through the host's token store.
#[derive(Debug, Parser)]
#[command(name = "myinvois-auth", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Log more to stderr (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the access token, and only it:
    /// curl -H "Authorization: Bearer $(myinvois-auth token)" ...
    Token {
        /// Log in as an intermediary for this taxpayer (TIN, or TIN:ROB).
        #[arg(long, value_name = "TIN")]
        on_behalf_of: Option<String>,
    },
    /// Log in and show whether the credentials work: environment, client
    /// ID, the token's taxpayer and name, scope, expiry; each failure
    /// explained, with an exit code of its own.
    Check {
        /// Check these taxpayers (one login each, within the limit).
        #[arg(long, value_name = "TIN", num_args = 1.., action = clap::ArgAction::Append)]
        on_behalf_of: Vec<String>,
    },
    /// Print the decoded claims of the current token (never the token).
    Claims {
        /// The token of an intermediary for this taxpayer.
        #[arg(long, value_name = "TIN")]
        on_behalf_of: Option<String>,
    },
}

/// Settings; each flag wins over its environment variable.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// The system user's client ID [env: MYINVOIS_CLIENT_ID]
    #[arg(long, global = true, value_name = "ID")]
    pub(crate) client_id: Option<String>,
    /// A file holding the client secret [env: MYINVOIS_CLIENT_SECRET_FILE]; or set
    /// MYINVOIS_CLIENT_SECRET. Never the secret itself on the command line.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) client_secret_file: Option<PathBuf>,
    /// Refused: other users can read a process's arguments.
    #[arg(long, global = true, hide = true, value_name = "SECRET", num_args = 0..=1)]
    pub(crate) client_secret: Option<Option<String>>,
    /// sandbox or production [env: MYINVOIS_ENVIRONMENT]
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) environment: Option<String>,
    /// The OAuth scope, e.g. InvoicingAPI [env: MYINVOIS_SCOPE]
    #[arg(long, global = true)]
    pub(crate) scope: Option<String>,
    /// Another identity service (https, or http on loopback) [env: MYINVOIS_IDENTITY_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) identity_url: Option<String>,
    /// The token store's database file [env: MYINVOIS_TOKEN_STORE]
    /// [default: myinvois-auth/tokens.sqlite3 in the user's cache folder]
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) token_store: Option<PathBuf>,
    /// Longest wait for a login slot, in seconds [default: 10; check: 600]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub(crate) max_wait: Option<u64>,
}
