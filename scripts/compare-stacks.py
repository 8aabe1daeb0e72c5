"""Compares two CloudFormation templates of the Eventfold stack: SAM's translation of
infra/template.yaml and the CDK app's synthesis. Exits 1 listing every difference.

Usage: compare-stacks.py SAM_TRANSLATED.json CDK_SYNTHESIZED.json

Both templates are reduced to the same canonical form first, so only differences in what
gets deployed remain:
- intrinsics become strings (`{"Ref": "X"}` -> `${X}`, GetAtt -> `${X.Attr}`, Sub and Join
  are expanded), and `${AWS::Partition}` reads `aws` (SAM's offline translation writes
  managed-policy ARNs literally);
- IAM documents: a one-element list equals its element (`"Action": "x"` == `["x"]`), and
  statements compare in any order;
- the HTTP API: SAM writes one `AWS::ApiGatewayV2::Api` with an OpenAPI `Body`, CDK writes
  the Api plus Authorizer, Integration and Route resources. Both become one model: name,
  settings, authorizers (type, identity source, issuer, audience) and routes (route key ->
  function, payload version, authorizer);
- left out, with the reason: descriptions (prose, not behaviour), `Metadata` (SAM's build
  hints, CDK's construct paths), `DependsOn` (ordering only; references already order),
  function `Code` (S3 locations of the same `sam build` output), the tags SAM stamps on what
  it creates (`lambda:createdBy`, `httpapi:createdBy`), and CDK's bootstrap machinery
  (`CDKMetadata`, the `BootstrapVersion` parameter and its rule).
An absent DeletionPolicy / UpdateReplacePolicy is CloudFormation's default, `Delete`.
"""

import json

import yaml
import re
import sys

IGNORED_KEYS = {"Description", "AlarmDescription"}
SAM_TAG_KEYS = {"lambda:createdBy", "httpapi:createdBy"}
API_PARTS = {
    "AWS::ApiGatewayV2::Authorizer",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
}


def expand(value, names=None):
    """Intrinsics -> canonical strings; everything else recursively."""
    names = names or {}
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return names.get(arg, f"${{{arg}}}")
            if key == "Fn::GetAtt":
                target = arg if isinstance(arg, str) else ".".join(arg)
                return f"${{{target}}}"
            if key == "Fn::Sub":
                text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                local = {k: expand(v) for k, v in local.items()}
                text = re.sub(r"\$\{([^}]+)\}", lambda m: local.get(m.group(1), m.group(0)), text)
                return expand(text)
            if key == "Fn::Join":
                sep, parts = arg
                return expand(sep.join(str(expand(p)) for p in parts))
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, str):
        return value.replace("${AWS::Partition}", "aws")
    return value


def strip(value):
    """Drops prose and SAM's own tags, recursively."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in IGNORED_KEYS:
                continue
            if k == "Tags":
                v = drop_sam_tags(v)
                if not v:
                    continue
            out[k] = strip(v)
        return out
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def drop_sam_tags(tags):
    if isinstance(tags, dict):
        return {k: v for k, v in tags.items() if k not in SAM_TAG_KEYS}
    return [t for t in tags if t.get("Key") not in SAM_TAG_KEYS]


def iam_document(doc):
    """One-element lists equal their element in IAM policy documents."""
    def norm(v):
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            items = [norm(x) for x in v]
            return items[0] if len(items) == 1 else items
        return v

    doc = norm(doc)
    # Statement order means nothing to IAM.
    if isinstance(doc, dict) and isinstance(doc.get("Statement"), list):
        doc["Statement"] = sorted(doc["Statement"], key=lambda st: json.dumps(st, sort_keys=True))
    # SAM writes its own statements (an on-failure destination's SQSPolicy) without a
    # Version; CDK always writes 2012-10-17. The two differ only for policy variables
    # (${aws:username}, ...), which no policy here uses.
    if isinstance(doc, dict) and "Statement" in doc and "${aws:" not in json.dumps(doc):
        doc.setdefault("Version", "2012-10-17")
    return doc


def normalize_iam(resource):
    props = resource.get("Properties", {})
    for key in ("AssumeRolePolicyDocument", "PolicyDocument"):
        if key in props:
            props[key] = iam_document(props[key])
    for policy in props.get("Policies", []):
        policy["PolicyDocument"] = iam_document(policy["PolicyDocument"])
    if "ManagedPolicyArns" in props:
        props["ManagedPolicyArns"] = sorted(props["ManagedPolicyArns"])


def sam_api(resource):
    props = resource["Properties"]
    body = props["Body"]
    schemes = body.get("components", {}).get("securitySchemes", {})
    authorizers = {}
    for name, scheme in schemes.items():
        auth = scheme["x-amazon-apigateway-authorizer"]
        jwt = auth.get("jwtConfiguration", {})
        authorizers[name] = {
            "type": auth["type"].upper(),
            "identity_source": [auth["identitySource"]] if isinstance(auth["identitySource"], str) else auth["identitySource"],
            "issuer": jwt.get("issuer"),
            "audience": jwt.get("audience"),
        }
    routes = {}
    for path, methods in body.get("paths", {}).items():
        for method, op in methods.items():
            integration = op["x-amazon-apigateway-integration"]
            function = re.search(r"functions/\$\{(\w+)\.Arn\}/invocations", integration["uri"]).group(1)
            security = [next(iter(s)) for s in op.get("security", [])]
            routes[f"{method.upper()} {path}"] = {
                "function": function,
                "payload": integration["payloadFormatVersion"],
                "authorizer": security[0] if security else None,
            }
    return {
        "name": body["info"]["title"],
        "fail_on_warnings": props.get("FailOnWarnings", False),
        "authorizers": authorizers,
        "routes": routes,
    }


def cdk_api(api_id, api, parts):
    props = api["Properties"]
    authorizers, by_ref = {}, {}
    for logical, res in parts.items():
        p = res["Properties"]
        if res["Type"] == "AWS::ApiGatewayV2::Authorizer" and p["ApiId"] == f"${{{api_id}}}":
            jwt = p.get("JwtConfiguration", {})
            authorizers[p["Name"]] = {
                "type": p["AuthorizerType"],
                "identity_source": p["IdentitySource"],
                "issuer": jwt.get("Issuer"),
                "audience": jwt.get("Audience"),
            }
            by_ref[f"${{{logical}}}"] = p["Name"]
    integrations = {
        f"${{{logical}}}": res["Properties"]
        for logical, res in parts.items()
        if res["Type"] == "AWS::ApiGatewayV2::Integration"
    }
    routes = {}
    for res in parts.values():
        p = res["Properties"]
        if res["Type"] != "AWS::ApiGatewayV2::Route" or p["ApiId"] != f"${{{api_id}}}":
            continue
        integration = integrations[p["Target"].removeprefix("integrations/")]
        if integration.get("IntegrationType") != "AWS_PROXY":
            raise SystemExit(f"route {p['RouteKey']}: not a Lambda proxy integration")
        routes[p["RouteKey"]] = {
            "function": re.fullmatch(r"\$\{(\w+)\.Arn\}", integration["IntegrationUri"]).group(1),
            "payload": integration["PayloadFormatVersion"],
            "authorizer": by_ref.get(p.get("AuthorizerId")) if p.get("AuthorizationType") == "JWT" else None,
        }
    return {
        "name": props.get("Name"),
        "fail_on_warnings": props.get("FailOnWarnings", False),
        "authorizers": authorizers,
        "routes": routes,
    }


def canonical(template, flavour):
    resources = {}
    api_parts = {}
    for logical, res in template["Resources"].items():
        if res["Type"] == "AWS::CDK::Metadata":
            continue
        res = expand(res)
        for key in ("Metadata", "DependsOn"):
            res.pop(key, None)
        res.setdefault("DeletionPolicy", "Delete")
        res.setdefault("UpdateReplacePolicy", "Delete")
        if res["Type"] == "AWS::Lambda::Function":
            res["Properties"].pop("Code", None)
        normalize_iam(res)
        if res["Type"] in API_PARTS:
            api_parts[logical] = res
            continue
        resources[logical] = strip(res)
    for logical, res in resources.items():
        if res["Type"] == "AWS::ApiGatewayV2::Api":
            # Keep the raw props for the API model (descriptions are dropped by strip).
            raw = expand(template["Resources"][logical])
            model = sam_api(raw) if flavour == "sam" else cdk_api(logical, raw, api_parts)
            res["Properties"] = model
    parameters = {
        name: strip(p)
        for name, p in template.get("Parameters", {}).items()
        if not (flavour == "cdk" and name == "BootstrapVersion")
    }
    outputs = {name: expand(o["Value"]) for name, o in template.get("Outputs", {}).items()}
    return {"Parameters": parameters, "Resources": resources, "Outputs": outputs}


def diff(path, left, right, out):
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            sub = f"{path}.{key}" if path else key
            if key not in right:
                out.append(f"{sub}: only in SAM: {json.dumps(left[key])[:300]}")
            elif key not in left:
                out.append(f"{sub}: only in CDK: {json.dumps(right[key])[:300]}")
            else:
                diff(sub, left[key], right[key], out)
    elif isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for i, (a, b) in enumerate(zip(left, right)):
            diff(f"{path}[{i}]", a, b, out)
    elif left != right:
        out.append(f"{path}: SAM {json.dumps(left)[:300]} != CDK {json.dumps(right)[:300]}")


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        sam = canonical(yaml.safe_load(f), "sam")
    with open(sys.argv[2], encoding="utf-8") as f:
        cdk = canonical(json.load(f), "cdk")
    differences = []
    diff("", sam, cdk, differences)
    if differences:
        print(f"compare-stacks: {len(differences)} difference(s) between the SAM and CDK stacks:")
        for d in differences:
            print("  " + d)
        sys.exit(1)
    kinds = {}
    for res in sam["Resources"].values():
        kinds[res["Type"]] = kinds.get(res["Type"], 0) + 1
    routes = next(
        (len(r["Properties"]["routes"]) for r in sam["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api"),
        0,
    )
    print(
        f"compare-stacks: SAM and CDK agree on {len(sam['Resources'])} resources "
        f"({', '.join(f'{n} {t}' for t, n in sorted(kinds.items()))}), {routes} routes, "
        f"{len(sam['Parameters'])} parameters, {len(sam['Outputs'])} outputs"
    )


if __name__ == "__main__":
    main()
