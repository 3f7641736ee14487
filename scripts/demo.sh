#!/usr/bin/env bash
# `make demo`: build examples/ocikit.yaml without a daemon, inspect the result, and run it
# with docker when an engine answers. Everything goes to $DEMO (default: demo/).
set -euo pipefail
OCIKIT=${OCIKIT:-.venv/bin/ocikit}
DEMO=${DEMO:-demo}
rm -rf "$DEMO" && mkdir -p "$DEMO/context"
cp -r examples/. "$DEMO/context/"
targets=(--target hello)
if [ -x /bin/busybox ]; then  # busybox-static runs in an image with nothing else in it
    case "$(ldd /bin/busybox 2>&1 || true)" in
    *"not a dynamic executable"*)
        # the runnable image: the example's, with busybox at /bin/busybox to print the site
        cp /bin/busybox "$DEMO/context/busybox"
        cat >>"$DEMO/context/ocikit.yaml" <<'EOF'
  hello-shell:
    from: {built: hello}
    imports:
      - src: busybox
        dest: /bin/busybox
        mode: "0755"
    config:
      cmd: [/bin/busybox, cat, /srv/site/index.txt]
EOF
        targets+=(--target hello-shell)
        ;;
    esac
fi
# (copying a docker-archive and converting it, then inspecting it, is `ocikit copy`/`inspect`)
"$OCIKIT" build -f "$DEMO/context/ocikit.yaml" --output "oci:$DEMO/oci" \
    --cache-dir "$DEMO/cache" "${targets[@]}"
"$OCIKIT" inspect "oci:$DEMO/oci:hello"
"$OCIKIT" check "oci:$DEMO/oci:hello"
if [ "${#targets[@]}" -gt 2 ] && docker version >/dev/null 2>&1; then
    "$OCIKIT" copy -q "oci:$DEMO/oci:hello-shell" docker-daemon:ocikit-demo/hello-shell:latest
    docker run --rm --network none ocikit-demo/hello-shell:latest
else
    echo "demo: no Docker engine (or no static busybox): built and inspected only"
fi
echo "demo: OCI layout in $DEMO/oci (tags: hello${targets[3]:+, hello-shell})"
bin=$(cd "$(dirname "$OCIKIT")" && pwd)
echo "demo: next, run ocikit as $bin/ocikit, put it on PATH (export PATH=\"$bin:\$PATH\"),"
echo "demo: or install it for your user (pipx install .; see the README's Install)"
