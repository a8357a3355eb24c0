#!/usr/bin/env python3
"""Writes a one-layer OCI image layout from files on this host.

usage: oci-image.py LAYOUT_DIR TAG CONFIG_JSON DEST=SRC [DEST=SRC ...] [DEST->LINK ...]

DEST=SRC copies a host file into the image (mode kept); DEST->LINK makes a
symlink. CONFIG_JSON is the image config's "config" object (Entrypoint, Cmd,
Env). Used to feed the local registry of the containerd run with busybox and
berth-pause images built from Debian's binaries, with no download.
"""

import hashlib
import io
import json
import os
import sys
import tarfile


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def main():
    layout, tag, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for spec in sys.argv[4:]:
            dest = spec.split("=", 1)[0].split("->", 1)[0].strip("/")
            parent = os.path.dirname(dest)
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = os.path.dirname(parent)
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for spec in sys.argv[4:]:
            if "->" in spec:
                dest, target = spec.split("->", 1)
                info = tarfile.TarInfo(dest.strip("/"))
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                dest, src = spec.split("=", 1)
                tar.add(src, arcname=dest.strip("/"))
    layer = buf.getvalue()
    layer_desc = blob(layout, layer)
    layer_desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = blob(layout, json.dumps(image_config).encode())
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(layout, json.dumps(manifest).encode())
    manifest_desc["mediaType"] = manifest["mediaType"]
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [manifest_desc]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
