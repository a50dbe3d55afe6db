#!/bin/sh
# Entrypoint of the gateway (nginx): the only service docker-compose.yml publishes.
#
# It puts the codec server's token, read from its secret file, into a config snippet that
# only root (the nginx master process) can read: nginx adds it as `Authorization: Bearer ...`
# to the requests it forwards to mentorflow-codec, after oauth2-proxy has authenticated the
# user. The token never reaches a browser. nginx cannot read a file into a variable itself.
set -eu

: "${CODEC_TOKEN_FILE:?CODEC_TOKEN_FILE is not set (the codec server token, a secret)}"
if [ ! -f "$CODEC_TOKEN_FILE" ] || [ ! -r "$CODEC_TOKEN_FILE" ]; then
    echo "gateway: cannot read $CODEC_TOKEN_FILE (create it with deploy/make-secrets.sh)" >&2
    exit 2
fi
token=$(cat "$CODEC_TOKEN_FILE")
# Only characters that need no quoting in nginx's config (openssl rand -hex 32 makes 64 of them).
case "$token" in
    "" | *[!A-Za-z0-9._~-]*)
        echo "gateway: $CODEC_TOKEN_FILE must hold one token of letters, digits, '.', '_', '~' or '-'" >&2
        exit 2
        ;;
esac

umask 077
mkdir -p /run/gateway
printf 'proxy_set_header Authorization "Bearer %s";\n' "$token" > /run/gateway/codec-auth.conf
unset token CODEC_TOKEN_FILE

exec nginx -c /deploy/gateway/nginx.conf -g 'daemon off;'
