"""The dashboard's deployment form read into the API's create body: whole numbers checked
here (the body's fields are strict integers), everything else by the API's own schema, so
the form accepts and refuses what `POST /deployment/create` does."""

from __future__ import annotations

import re

from pydantic import ValidationError

import schemas

WHOLE_NUMBER = re.compile(r"[0-9]{1,19}")


class FormError(Exception):
    """A form field that cannot be read as what it must be."""


def whole(value: str, label: str, default: int | None = 0) -> int | None:
    text = value.strip()
    if not text:
        return default
    if not WHOLE_NUMBER.fullmatch(text):
        raise FormError(f"{label} must be a whole number, not '{text[:20]}'")
    return int(text)


def deployment_body(
    org_name: str, cluster_name: str, form: dict[str, str]
) -> schemas.DeploymentCreate:
    """The API's create body from the form's fields; its validation is the API's."""
    depends_on = []
    for part in re.split(r"[\s,]+", form["depends_on"].strip()):
        if part:
            depends_on.append(whole(part.lstrip("#"), "each dependency"))
    body = {
        "cluster_name": cluster_name,
        "organization_name": org_name,
        "docker_image": form["docker_image"].strip(),
        "required_cpu": whole(form["cpu"], "cpu"),
        "required_ram": whole(form["ram"], "ram"),
        "required_gpu": whole(form["gpu"], "gpu"),
        "priority": whole(form["priority"], "priority"),
        "name": form["name"].strip() or None,
        "depends_on": depends_on,
        "duration_seconds": whole(form["duration"], "duration", None),
    }
    return schemas.DeploymentCreate.model_validate(body)


LABELS = {
    "docker_image": "image",
    "required_cpu": "cpu",
    "required_ram": "ram",
    "required_gpu": "gpu",
    "duration_seconds": "duration",
    "depends_on": "dependencies",
}


def validation_message(error: ValidationError) -> str:
    """Each problem of the form in words: "gpu: Input should be less than or equal to ..."."""
    problems = []
    for issue in error.errors()[:10]:
        field = next((str(part) for part in issue["loc"] if isinstance(part, str)), "")
        label = LABELS.get(field, field)
        message = str(issue["msg"]).removeprefix("Value error, ")
        problems.append(f"{label}: {message}" if label else message)
    return "; ".join(problems)
