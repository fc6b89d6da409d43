#!/usr/bin/env bash
# The README's walkthrough with curl, as one script: run it against `opencbr serve` (or
# `make run`) on the built-in defaults, from the directory that holds `.opencbr`.
#
#   bash docs/walkthrough.sh
#
# It logs in to both regions' projects, creates a backup vault, registers a directory
# under the default resources root, backs it up twice (full, then incremental), restores
# it, replicates the vault to region2 (the seed call) and one more backup on its own,
# restores a replica in region2, and deletes what it made. Needs bash, curl and python3.
# Settings: CBR_URL (default http://127.0.0.1:8080), CBR_DATA_DIR (default ./.opencbr).
set -euo pipefail

URL=${CBR_URL:-http://127.0.0.1:8080}
DATA=${CBR_DATA_DIR:-.opencbr}
PW=$(cat "$DATA/admin-password")

step() { printf '\n== %s\n' "$*"; }

# field PATH: print a value of the JSON on stdin; PATH is dotted, numbers index lists.
field() {
    python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value if isinstance(value, str) else json.dumps(value))' "$1"
}

# api TOKEN METHOD PATH [BODY]: one call; the answer on stdout, an HTTP error fails the script.
api() {
    local token=$1 method=$2 path=$3 body=${4:-}
    local args=(-sS --fail-with-body -X "$method" "$URL$path" -H "X-Auth-Token: $token")
    [[ -n $body ]] && args+=(-H 'Content-Type: application/json' -d "$body")
    curl "${args[@]}"
}

# login PROJECT_NAME: a token scoped to the project, then its id: "TOKEN PROJECT_ID".
login() {
    local answer
    answer=$(curl -sS --fail-with-body -D - "$URL/identity/v3/auth/tokens" \
        -H 'Content-Type: application/json' -d '{"auth": {
          "identity": {"methods": ["password"], "password": {"user": {"name": "admin",
                       "domain": {"name": "Default"}, "password": "'"$PW"'"}}},
          "scope": {"project": {"name": "'"$1"'", "domain": {"name": "Default"}}}}}')
    local token project
    token=$(printf '%s' "$answer" | awk 'tolower($1) == "x-subject-token:" {print $2}' | tr -d '\r')
    project=$(printf '%s' "$answer" | sed -n '/^\r\{0,1\}$/,$p' | field token.project.id)
    echo "$token $project"
}

# wait_until TOKEN PATH FIELD VALUE...: poll GET PATH until FIELD is one of the VALUEs.
wait_until() {
    local token=$1 path=$2 name=$3
    shift 3
    local value
    for _ in $(seq 600); do
        value=$(api "$token" GET "$path" | field "$name")
        for wanted in "$@"; do
            [[ $value == "$wanted" ]] && { echo "$value"; return; }
        done
        sleep 0.5
    done
    echo "timed out waiting for $path $name in ($*), last: $value" >&2
    return 1
}

vault_body() {  # NAME PROTECT_TYPE
    echo '{"vault": {"name": "'"$1"'", "resources": [], "billing": {
      "consistent_level": "crash_consistent", "object_type": "turbo",
      "protect_type": "'"$2"'", "size": 10}}}'
}

# back_up TOKEN PROJECT VAULT NAME: run a checkpoint, wait for it, print its backup's id.
back_up() {
    local checkpoint
    checkpoint=$(api "$1" POST "/v3/$2/checkpoints" \
        '{"checkpoint": {"vault_id": "'"$3"'", "parameters": {"name": "'"$4"'"}}}' |
        field checkpoint.id)
    wait_until "$1" "/v3/$2/checkpoints/$checkpoint" checkpoint.status available >/dev/null
    api "$1" GET "/v3/$2/backups?checkpoint_id=$checkpoint" | field backups.0.id
}

# restore TOKEN PROJECT BACKUP RESOURCE: restore into a registered resource and wait.
restore() {
    api "$1" POST "/v3/$2/backups/$3/restore" '{"restore": {"resource_id": "'"$4"'"}}'
    local log
    for _ in $(seq 600); do
        log=$(api "$1" GET "/v3/$2/operation-logs?operation_type=restore" | python3 -c '
import json, sys
logs = [l for l in json.load(sys.stdin)["operation_logs"]
        if l["extra_info"]["restore"]["backup_id"] == sys.argv[1]]
print(logs[0]["status"] if logs else "")' "$3")
        case $log in
            success) echo "restore $3: success"; return ;;
            failed) echo "restore $3 failed" >&2; return 1 ;;
        esac
        sleep 0.5
    done
    return 1
}

# replicated BACKUP: wait for the backup's replication record (in region1) to succeed.
replicated() {
    local status
    status=$(wait_until "$TOKEN" "/v3/$P1/backups/$1" \
        backup.replication_records.0.status success fail)
    echo "backup $1 replicated: $status"
    [[ $status == success ]]
}

register_dir() {  # TOKEN PROJECT NAME PATH: print the new resource's id
    api "$1" POST "/v3/$2/protectables/turbo/instances" \
        '{"instance": {"name": "'"$3"'", "path": "'"$4"'"}}' | field instance.id
}

step "Tokens for the projects of both regions (named after their regions)"
read -r TOKEN P1 < <(login region1)
read -r TOKEN2 P2 < <(login region2)
echo "region1 project $P1, region2 project $P2"

step "A directory under region1's default resources root, registered as a resource"
ROOT1=$(cd "$DATA/resources/region1" && pwd)
ROOT2=$(cd "$DATA/resources/region2" && pwd)
SRC="$ROOT1/walkthrough"
mkdir -p "$SRC/docs" "$ROOT1/restored" "$ROOT2/replica"
printf 'first version\n' > "$SRC/docs/readme.txt"
head -c 3000000 /dev/urandom > "$SRC/blob.bin"
R=$(register_dir "$TOKEN" "$P1" walkthrough "$SRC")
RESTORED=$(register_dir "$TOKEN" "$P1" restored "$ROOT1/restored")
echo "resource $R"

step "A backup vault with the resource"
V1=$(api "$TOKEN" POST "/v3/$P1/vaults" "$(vault_body vault-src backup)" | field vault.id)
api "$TOKEN" POST "/v3/$P1/vaults/$V1/addresources" \
    '{"resources": [{"id": "'"$R"'", "type": "OS::Sfs::Turbo"}]}' >/dev/null
echo "vault $V1"

step "Back up (full), change a file, back up again (incremental)"
B1=$(back_up "$TOKEN" "$P1" "$V1" first)
printf 'second version\n' > "$SRC/docs/readme.txt"
B2=$(back_up "$TOKEN" "$P1" "$V1" second)
for backup in "$B1" "$B2"; do
    echo "backup $backup stored $(api "$TOKEN" GET "/v3/$P1/backups/$backup" |
        field backup.stored_bytes) new bytes"
done

step "Restore the newest backup into another registered directory"
restore "$TOKEN" "$P1" "$B2" "$RESTORED"
diff -r "$SRC" "$ROOT1/restored" && echo "restored tree is identical"

step "Replicate the vault to region2 (the seed call)"
V2=$(api "$TOKEN2" POST "/v3/$P2/vaults" "$(vault_body vault-dst replication)" | field vault.id)
api "$TOKEN" POST "/v3/$P1/checkpoints/replicate" '{"replicate": {"auto_trigger": false,
    "destination_project_id": "'"$P2"'", "destination_region": "region2",
    "destination_vault_id": "'"$V2"'", "vault_id": "'"$V1"'"}}'
echo
for backup in "$B1" "$B2"; do
    replicated "$backup"
done

step "Back up once more and replicate just that backup"
B3=$(back_up "$TOKEN" "$P1" "$V1" third)
api "$TOKEN" POST "/v3/$P1/backups/$B3/replicate" '{"replicate": {
    "destination_project_id": "'"$P2"'", "destination_region": "region2",
    "destination_vault_id": "'"$V2"'", "name": "third-copy", "description": "one backup"}}'
echo
replicated "$B3"

step "Restore a replica in region2"
REPLICA=$(api "$TOKEN" GET "/v3/$P1/backups/$B3" |
    field backup.replication_records.0.destination_backup_id)
TARGET2=$(register_dir "$TOKEN2" "$P2" replica "$ROOT2/replica")
restore "$TOKEN2" "$P2" "$REPLICA" "$TARGET2"
diff -r "$SRC" "$ROOT2/replica" && echo "replica restored identically in region2"

step "Delete: a backup, then both vaults (with their backups) and the resources"
api "$TOKEN" DELETE "/v3/$P1/backups/$B1"
api "$TOKEN2" DELETE "/v3/$P2/vaults/$V2"
api "$TOKEN" DELETE "/v3/$P1/vaults/$V1"
for resource in "$R" "$RESTORED"; do
    api "$TOKEN" DELETE "/v3/$P1/protectables/turbo/instances/$resource"
done
api "$TOKEN2" DELETE "/v3/$P2/protectables/turbo/instances/$TARGET2"
echo "done"
