#!/bin/sh
# Creates the secret files and TLS certificates docker-compose.yml reads, in deploy/secrets/
# (or the folder in SECRETS_DIR). Never overwrites a file that exists: run it again after
# deleting a file to make that one anew. Needs only openssl and a POSIX shell.
#
#   deploy/make-secrets.sh                          # the gateway's certificate for localhost
#   deploy/make-secrets.sh temporal.example.org     # ... for the host names (or IPs) given
#
# What it makes (each secret one line, without a trailing newline):
#   temporal_db_password, mentorflow_db_password   the two PostgreSQL servers' passwords
#   mentorflow_encryption_keys                     MENTORFLOW_ENCRYPTION_KEYS, one key `k1:BASE64`
#   codec_token                                    shared by the gateway and the codec server
#   oauth2_cookie_secret                           encrypts oauth2-proxy's session cookie
#   api_key_secret                                 the HTTP API's server secret: API keys are
#                                                  stored as HMAC-SHA256 hashes keyed with it
#   ca.crt, ca.key                                 a private CA for the certificates below;
#                                                  ca.key is used only here: keep it offline
#   postgresql.crt/.key, mentorflow-db.crt/.key    the PostgreSQL servers' certificates
#   gateway.crt/.key                               the gateway's HTTPS certificate (replace it
#                                                  with one your browsers trust, same names)
#   temporal.crt/.key, temporal-client.crt/.key    Temporal mTLS (deploy/compose.mtls.yml)
# and asks for oidc_client_secret, the client secret your identity provider issued for the
# gateway, when standard input has it (a terminal prompt, or a pipe); else it says how.
#
# The folder is 0700, so on the host only you (and root) can read what is in it. The files
# are 0644 because each container reads its secrets as its own unprivileged user (Temporal
# 1000, mentorflow 10001, oauth2-proxy 65532, ...) through a bind mount that keeps the
# file's owner and mode: a 0600 file of yours would be unreadable to them. ca.key stays 0600.
set -eu

dir="${SECRETS_DIR:-$(dirname "$0")/secrets}"
if [ "$#" -gt 0 ]; then gateway_hosts="$*"; else gateway_hosts="localhost 127.0.0.1"; fi
command -v openssl > /dev/null || { echo "make-secrets: openssl is not installed" >&2; exit 1; }

umask 077
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"

# secret NAME COMMAND...: NAME gets COMMAND's output, newlines removed, unless NAME exists.
secret() {
    name=$1
    shift
    if [ -e "$name" ]; then
        echo "kept     $dir/$name"
        return
    fi
    "$@" | tr -d '\n' > "$name.new"
    if [ ! -s "$name.new" ]; then
        echo "make-secrets: nothing to write to $name" >&2
        rm -f "$name.new"
        exit 1
    fi
    chmod 644 "$name.new"
    mv "$name.new" "$name"
    echo "created  $dir/$name"
}

encryption_key() {
    printf 'k1:%s' "$(openssl rand -base64 32)"
}

# base64url of 32 random bytes: oauth2-proxy decodes it to an AES-256 key.
cookie_secret() {
    openssl rand -base64 32 | tr -- '+/' '-_'
}

secret temporal_db_password openssl rand -hex 32
secret mentorflow_db_password openssl rand -hex 32
secret mentorflow_encryption_keys encryption_key
secret codec_token openssl rand -hex 32
secret oauth2_cookie_secret cookie_secret
# Replacing it invalidates every API key at once (docs/api.md): delete it only to do that.
secret api_key_secret openssl rand -hex 32

# -- certificates ---------------------------------------------------------------------------

cat > openssl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

if [ -e ca.crt ]; then
    echo "kept     $dir/ca.crt"
else
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    chmod 600 ca.key
    openssl req -new -x509 -key ca.key -subj "/CN=mentorflow compose CA" -days 3650 -sha256 \
        -config openssl.cnf -extensions ca_ext -out ca.crt
    chmod 644 ca.crt
    echo "created  $dir/ca.crt (and ca.key)"
fi

# certificate NAME USAGE HOST...: NAME.crt and NAME.key, signed by the CA, for the hosts.
certificate() {
    name=$1
    usage=$2
    shift 2
    if [ -e "$name.crt" ]; then
        echo "kept     $dir/$name.crt"
        return
    fi
    [ -e ca.key ] || { echo "make-secrets: $name.crt needs ca.key, which is gone" >&2; exit 1; }
    names=""
    for host in "$@"; do
        case "$host" in
            *[!0-9.]* ) case "$host" in *:*) kind=IP ;; *) kind=DNS ;; esac ;;
            *) kind=IP ;;
        esac
        names="${names:+$names, }$kind:$host"
    done
    cat > "$name.cnf" <<EOF
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $usage
subjectAltName = ${names:-DNS:$name}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
    openssl ecparam -name prime256v1 -genkey -noout -out "$name.key"
    openssl req -new -key "$name.key" -subj "/CN=${1:-$name}" -config openssl.cnf -out "$name.csr"
    if ! openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAserial ca.srl -CAcreateserial \
        -days 825 -sha256 -extfile "$name.cnf" -extensions leaf -out "$name.crt" 2> "$name.err"; then
        cat "$name.err" >&2
        exit 1
    fi
    rm -f "$name.csr" "$name.cnf" "$name.err"
    chmod 644 "$name.crt" "$name.key"
    echo "created  $dir/$name.crt (and .key) for ${names:-$name}"
}

certificate postgresql serverAuth postgresql
certificate mentorflow-db serverAuth mentorflow-db
# shellcheck disable=SC2086 # one word per host
certificate gateway serverAuth $gateway_hosts
# Temporal's frontend and internode certificate; its system worker presents it as a client too.
certificate temporal "serverAuth, clientAuth" temporal
certificate temporal-client clientAuth mentorflow-client
rm -f openssl.cnf

# -- the identity provider's client secret ---------------------------------------------------

if [ -e oidc_client_secret ]; then
    echo "kept     $dir/oidc_client_secret"
else
    if [ -t 0 ]; then
        printf 'The client secret your identity provider issued for the gateway (not shown): ' >&2
        trap 'stty echo' EXIT
        stty -echo
        IFS= read -r client_secret || client_secret=""
        stty echo
        trap - EXIT
        echo >&2
    else
        IFS= read -r client_secret || true
        client_secret="${client_secret:-}"
    fi
    if [ -n "$client_secret" ]; then
        printf '%s' "$client_secret" > oidc_client_secret.new
        chmod 644 oidc_client_secret.new
        mv oidc_client_secret.new oidc_client_secret
        echo "created  $dir/oidc_client_secret"
    else
        echo "missing  $dir/oidc_client_secret: run this again in a terminal, or" \
            "pipe the secret in: deploy/make-secrets.sh < file-holding-the-secret" >&2
    fi
fi
