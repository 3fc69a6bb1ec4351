// gql_usage's GraphiQL page (gql_usage/http/templates/graphiql.html): GraphiQL with a
// token field. Every request GraphiQL makes, the first schema introspection included,
// carries "Authorization: Bearer <token>"; the token is kept in this browser
// (localStorage) and a new one fetches the schema again. See docs/graphiql.md.
(function () {
  "use strict";

  var STORAGE_KEY = "gql_usage:graphiql:token";
  var NO_TOKEN =
    "No token: paste a user JWT into the Token field above " +
    "(gql-usage token --user ID --account ID prints one).";
  var root = document.getElementById("ide");
  var endpoint = root.getAttribute("data-endpoint");
  // Only a `gql-usage serve --demo` server renders this attribute.
  var demoToken = root.getAttribute("data-demo-token") || "";
  var form = document.getElementById("token-form");
  var input = document.getElementById("token");
  var status = document.getElementById("token-status");

  function storedToken() {
    try {
      return window.localStorage.getItem(STORAGE_KEY);
    } catch (e) {
      return null;
    }
  }

  function storeToken(token) {
    try {
      if (token) {
        window.localStorage.setItem(STORAGE_KEY, token);
      } else {
        window.localStorage.removeItem(STORAGE_KEY);
      }
    } catch (e) {
      // Storage disabled: the token lasts as long as the page.
    }
  }

  // A pasted "Bearer xyz" is taken as "xyz".
  function clean(text) {
    return text.trim().replace(/^bearer\s+/i, "");
  }

  function makeFetcher(token) {
    return function fetcher(params, options) {
      var headers = { "Content-Type": "application/json", Accept: "application/json" };
      var extra = (options && options.headers) || {};
      Object.keys(extra).forEach(function (name) {
        headers[name] = String(extra[name]);
      });
      var named = Object.keys(headers).filter(function (name) {
        return name.toLowerCase() === "authorization";
      });
      if (token) {
        // The token field wins over an Authorization line in the headers editor.
        named.forEach(function (name) {
          delete headers[name];
        });
        headers.Authorization = "Bearer " + token;
      } else if (named.length === 0) {
        // Every request needs a token: say so instead of collecting a 401.
        return Promise.resolve({
          errors: [{ message: NO_TOKEN, extensions: { code: "UNAUTHENTICATED" } }],
        });
      }
      return window
        .fetch(endpoint, {
          method: "POST",
          headers: headers,
          body: JSON.stringify(params),
          credentials: "omit",
        })
        .then(function (response) {
          return response.text().then(function (text) {
            try {
              return JSON.parse(text);
            } catch (e) {
              return { errors: [{ message: "HTTP " + response.status + ": " + text }] };
            }
          });
        });
    };
  }

  var reactRoot = ReactDOM.createRoot(document.getElementById("graphiql"));

  function render(token) {
    status.textContent = token ? "Requests carry this token." : "No token yet.";
    reactRoot.render(
      React.createElement(GraphiQL, {
        // A new fetcher makes GraphiQL introspect the schema again.
        fetcher: makeFetcher(token),
        defaultEditorToolsVisibility: true,
      })
    );
  }

  var current = storedToken();
  if (current === null) {
    current = demoToken;
  }
  input.value = current;

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var token = clean(input.value);
    input.value = token;
    if (token === current) {
      return;
    }
    current = token;
    storeToken(token);
    render(token);
  });

  render(current);
})();
