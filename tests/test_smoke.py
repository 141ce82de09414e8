from helpers import fresh_get, sign_in


async def test_sign_in_and_reach_the_app(gateway, alice):
    client = await gateway()
    result = await sign_in(client, rd="/hello")
    assert result.status == 303, result.text
    assert result.location == "/hello"
    assert result.token
    response = await fresh_get(client, "/hello", result.token, Accept="application/json")
    assert response.status == 200
