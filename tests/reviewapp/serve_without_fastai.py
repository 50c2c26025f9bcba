"""Run by test_onnx_serving.py in a fresh interpreter: one real web request to the predict
API, then which heavy modules that process imported. Not a test module itself.

``setup``: migrate a new SQLite database under LOUPE_VAR_DIR and store a live version whose
files are the paths given; ``request``: answer one prediction, print a JSON line.
"""

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewapp.settings")


def setup(export_path: str, onnx_path: str, spec_path: str) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from reviewapp.models import Category, ModelVersion, Project
    from reviewapp.serving import client_token_create
    from trainer import sha256_file

    project = Project.objects.create(name="Colours", slug="colours")
    for name in ("blue", "red"):
        Category.objects.create(project=project, name=name)
    folder = Path(settings.MEDIA_ROOT) / "models" / "v1"
    folder.mkdir(parents=True)
    shutil.copyfile(export_path, folder / "export.pkl")
    shutil.copyfile(onnx_path, folder / "model.onnx")
    ModelVersion.objects.create(
        project=project,
        number=1,
        stage=ModelVersion.Stage.LIVE,
        traffic_share=100,
        export_file="models/v1/export.pkl",
        export_sha256=sha256_file(export_path),
        weights_file="models/v1/weights.pth",
        weights_sha256="0" * 64,
        onnx_file="models/v1/model.onnx",
        onnx_sha256=sha256_file(onnx_path),
        onnx_spec=json.loads(Path(spec_path).read_text()),
        onnx_max_prob_diff=0.0,
        config={},
        vocab=["blue", "red"],
    )
    _, key = client_token_create(project=project, client="test")
    print(key)


def request(image_path: str, key: str) -> None:
    from django.test import Client

    from reviewapp.wsgi import application  # what gunicorn loads

    assert application is not None
    with open(image_path, "rb") as f:
        response = Client().post(
            "/api/v1/projects/colours/predict",
            {"image": f},
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )
    body = response.json()
    print(
        json.dumps(
            {
                "status": response.status_code,
                "runtime": body.get("runtime"),
                "label": body.get("label"),
                "fastai": any(m == "fastai" or m.startswith("fastai.") for m in sys.modules),
                "torch": "torch" in sys.modules,
            }
        )
    )


if __name__ == "__main__":
    {"setup": setup, "request": request}[sys.argv[1]](*sys.argv[2:])
