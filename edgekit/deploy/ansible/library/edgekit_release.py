# The documentation of the edgekit_release action (ansible-doc -M library edgekit_release). The work is done on
# the controller by ../action_plugins/edgekit_release.py; nothing of this file runs on the board.

DOCUMENTATION = r"""
module: edgekit_release
short_description: Flash, roll back or list edgekit releases on a board
description:
  - Does what C(edgekit flash) does, over the task's own connection. The bundle's files and edgekit's runtime go
    into a hidden staging directory under I(remote_dir)/releases/, the board's agent checks every sha256, moves the
    release into place and switches I(remote_dir)/current atomically; older releases beyond I(keep) are removed.
  - A host already on the bundle (its files verified by the board) is left alone and reported ok, not changed.
  - Check mode probes the board and reports what would be uploaded and switched.
  - Runs on the controller; needs edgekit (with the ansible extra) in the same Python as ansible-core. The board
    needs only its Python (I(remote_python)) with numpy and a TFLite interpreter, and tar.
options:
  state:
    description: C(flashed) switches to I(bundle); C(rolled_back) switches current back to previous;
      C(listed) returns the releases.
    choices: [flashed, rolled_back, listed]
    default: flashed
  bundle:
    description: The bundle directory (manifest.json, stage_*.tflite) on the controller; relative to the
      directory ansible-playbook runs in. Required with state=flashed.
    type: path
  keep:
    description: Releases kept on the board (at least 2).
    type: int
    default: 3
  force:
    description: Flash despite soft mismatches (another board of the same arch, another Python minor).
    type: bool
    default: false
  remote_dir:
    description: The board's directory holding releases/, current and previous.
    default: ~/edgekit
  remote_python:
    description: The board's Python that runs the agent and the runtime.
    default: python3
  target:
    description: The board's profile (targets/*.yaml), when it is not the one the bundle was built for.
  require_signature:
    description: Refuse the bundle unless it is signed by one of I(trusted_keys) or a key in the board's
      I(remote_dir)/trusted_keys/.
    type: bool
    default: false
  trusted_keys:
    description: Public key files (or directories of *.pub) on the controller that must have signed the bundle.
    type: list
    elements: path
"""

EXAMPLES = r"""
- name: Flash, 25% of the fleet at a time, stop at the first failure
  hosts: pis
  serial: "25%"
  max_fail_percentage: 0
  gather_facts: false
  tasks:
    - edgekit_release:
        bundle: out/raspberry-pi-5
        remote_dir: "{{ edgekit_remote_dir | default('~/edgekit') }}"
"""

RETURN = r"""
current: {description: The release DIR/current points at afterwards (a 16-hex-digit bundle id)., type: str}
previous: {description: The release DIR/previous points at afterwards., type: str}
uploaded_files: {description: Files copied to the board (0 when it already had the release)., type: int}
uploaded_bytes: {description: Bytes copied to the board., type: int}
would_upload_files: {description: In check mode, the files a real run would copy., type: int}
releases: {description: With state=listed, every release with its marker data., type: list}
"""
